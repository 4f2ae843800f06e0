"""Provenance: digests and versions in the results, ``qgate verify``, the in-toto attestation."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate import __version__
from qgate.attestation import PREDICATE_TYPE, STATEMENT_TYPE, NotAttestable, build_statement
from qgate.datasets import load_dataset
from qgate.hashing import DigestIndex, manifest_digest
from qgate.plugins import Registry
from qgate.policy import DatasetSpec, load_policy
from qgate.progress import Progress
from qgate.provenance import BACKEND_LIBRARIES, NOT_INSTALLED, artifact_record, policy_sha256
from qgate.results import RunReport
from qgate.runner import Runner
from qgate_reporters import html, markdown

POLICY = """
name: unit
backend: {n_ctx: 128}
evaluation: {chunks: 3, top_k: 8, bootstrap: 200}
datasets: [en, code]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def run(qgate, fake, policy_file, tmp_path):
    """A finished run: two subjects, a reference; returns (paths, results, attestation)."""

    def go(name: str = "r") -> dict[str, Path]:
        paths = {
            "ref": tmp_path / "ref.fake.json",
            "q8": tmp_path / "q8.fake.json",
            "q2": tmp_path / "q2.fake.json",
        }
        if not paths["ref"].exists():
            fake("ref")
            fake("q8", noise=0.02)
            fake("q2", noise=1.5)
        out, att = tmp_path / f"{name}.json", tmp_path / f"{name}.intoto.json"
        result = qgate(
            "check",
            paths["q8"],
            paths["q2"],
            "--reference",
            paths["ref"],
            "--policy",
            policy_file,
            "--json",
            out,
            "--attestation",
            att,
            "-q",
        )
        assert result.code == 1, result  # q2 fails the gate; the run itself is complete
        return {**paths, "results": out, "attestation": att}

    return go


def provenance_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["provenance"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_one_byte_keeping_mtime(path: Path) -> None:
    """Change one byte in place; size and modification time stay exactly as they were."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


# --------------------------------------------------------------------------------------------
# the provenance block


def test_provenance_records_what_was_measured(run):
    paths = run()
    prov = provenance_of(paths["results"])
    assert prov["qgate_version"] == __version__
    subjects = {s["name"]: s for s in prov["subjects"]}
    assert set(subjects) == {"q8.fake.json", "q2.fake.json"}
    for name in ("q8", "q2"):
        record = subjects[f"{name}.fake.json"]
        assert record["kind"] == "file" and record["path"] == str(paths[name])
        assert record["sha256"] == sha256_of(paths[name])
        assert record["size"] == paths[name].stat().st_size
    assert prov["reference"]["sha256"] == sha256_of(paths["ref"])
    # the policy: digest of the resolved policy, and the file it came from
    assert HEX64.match(prov["policy"]["sha256"])
    assert prov["policy"]["name"] == "unit"
    assert prov["policy"]["files"][0]["sha256"] == sha256_of(
        Path(prov["policy"]["files"][0]["path"])
    )
    assert prov["policy"]["backend_options"]["n_ctx"] == 128
    # datasets: the same text digests the reference cache keys use
    datasets = {d["domain"]: d for d in prov["datasets"]}
    for name in ("en", "code"):
        assert datasets[name]["sha256"] == load_dataset(DatasetSpec(name=name)).digest
        assert datasets[name]["source"] == f"builtin:{name}"
    # plugins with distribution and version
    plugins = {p["plugin"]: p for p in prov["plugins"]}
    assert plugins["qgate-llm:perplexity"]["distribution"] == "qgate-llm"
    assert plugins["qgate-llm:perplexity"]["version"] == __version__
    assert "check:perplexity" in plugins["qgate-llm:perplexity"]["provides"]
    # backend libraries: every one named, installed or not
    assert set(prov["libraries"]) == set(BACKEND_LIBRARIES)
    assert prov["libraries"]["numpy"] == np.__version__
    for name, value in prov["libraries"].items():
        assert value == NOT_INSTALLED or re.match(r"^\d+(\.\d+)*", value), (name, value)
    torch = importlib.util.find_spec("torch")
    assert (prov["libraries"]["torch"] == NOT_INSTALLED) == (torch is None)
    # the machine
    machine = prov["machine"]
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))
    assert machine["logical_cpus"] == os.cpu_count()
    assert machine["platform"] and machine["memory_bytes"] > 0
    if Path("/proc/cpuinfo").is_file():
        assert machine["cpu"]
    # the command is recorded by the CLI next to it
    assert json.loads(paths["results"].read_text())["environment"]["command"].startswith("qgate")


def test_digests_are_stable_across_runs(run, policy_file, tmp_path):
    paths = run("first")
    again = run("second")
    first, second = provenance_of(paths["results"]), provenance_of(again["results"])
    for key in ("subjects", "reference", "datasets", "prompt_sets", "plugins", "libraries"):
        assert first[key] == second[key], key
    assert first["policy"]["sha256"] == second["policy"]["sha256"]
    # where the policy file lies does not change the policy's digest
    moved = tmp_path / "elsewhere" / "unit.yaml"
    moved.parent.mkdir()
    shutil.copy(policy_file, moved)
    registry = Registry.from_environment()
    assert (
        policy_sha256(load_policy(str(moved), registry.check_objects()))
        == first["policy"]["sha256"]
    )
    # ... but what it asks for does
    moved.write_text(POLICY.replace("max_delta: 0.05", "max_delta: 0.06"))
    assert (
        policy_sha256(load_policy(str(moved), registry.check_objects()))
        != first["policy"]["sha256"]
    )


def test_each_model_is_hashed_once_per_run_from_its_bytes(fake, policy_file, monkeypatch):
    import qgate.hashing

    calls: list[str] = []
    real = qgate.hashing.sha256_file

    def counting(path: Path, **kwargs: Any) -> str:
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(qgate.hashing, "sha256_file", counting)
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    ref, sub = fake("ref"), fake("sub", noise=0.02)
    from qgate.cache import ReferenceCache, default_cache_dir

    def run_once() -> RunReport:
        runner = Runner(
            registry, policy, reference=str(ref), cache=ReferenceCache(default_cache_dir())
        )
        return runner.run([str(sub)])

    report = run_once()
    # the reference was hashed for its cache key; provenance reused that digest
    assert sorted(calls) == ["ref.fake.json", "sub.fake.json"]
    assert report.provenance["reference"]["sha256"] == sha256_of(ref)
    calls.clear()
    again = run_once()  # a new run reads both again: no digest is taken from a stored index
    assert sorted(calls) == ["ref.fake.json", "sub.fake.json"]
    assert again.provenance["subjects"] == report.provenance["subjects"]


def test_folder_models_record_a_manifest_whose_digest_is_the_folder_digest(tmp_path):
    folder = tmp_path / "model-exl2"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "output.safetensors").write_bytes(b"\x00" * 1000)
    (folder / "sub" / "tokenizer.json").write_text('{"v": 1}')
    index = DigestIndex(None)
    record = artifact_record(folder, index, progress=Progress(enabled=False))
    assert record["kind"] == "folder"
    files = {f["path"]: f for f in record["files"]}
    assert set(files) == {"config.json", "output.safetensors", "sub/tokenizer.json"}
    assert files["sub/tokenizer.json"]["sha256"] == sha256_of(folder / "sub" / "tokenizer.json")
    assert record["size"] == 2 + 1000 + 8
    manifest = {path: f["sha256"] for path, f in files.items()}
    assert record["sha256"] == manifest_digest(manifest) == index.digest(folder)


def test_results_without_provenance_read_back_as_empty():
    data = RunReport(policy="p").to_dict()
    assert data["provenance"] == {}
    del data["provenance"]  # a results file written before provenance was recorded
    assert RunReport.from_dict(data).provenance == {}
    report = RunReport(policy="p", provenance={"subjects": [{"name": "a", "sha256": "ab"}]})
    assert RunReport.from_dict(report.to_dict()).provenance == report.provenance


def test_library_versions_import_nothing():
    code = (
        "import sys; from qgate.provenance import library_versions; library_versions(); "
        "print(sorted(m for m in ('torch', 'llama_cpp', 'transformers', 'exllamav2', "
        "'gptqmodel', 'gguf') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------------
# qgate verify


def test_verify_passes_on_the_same_files(qgate, run):
    paths = run()
    result = qgate("verify", paths["results"], "-q")
    assert result.code == 0, result
    assert result.out.count("ok ") == 3 and "MISMATCH" not in result.out
    assert "all files match" in result.out


def test_verify_catches_one_changed_byte_even_with_size_and_mtime_kept(qgate, run, tmp_path):
    paths = run()
    flip_one_byte_keeping_mtime(paths["q2"])
    # no digest index is fooled (same path, size and mtime): a new run reads the bytes ...
    fresh = DigestIndex(tmp_path / "qgate-cache").digest(paths["q2"])
    assert fresh != provenance_of(paths["results"])["subjects"][1]["sha256"]
    # ... and so does verification
    result = qgate("verify", paths["results"], "-q")
    assert result.code == 1, result
    line = next(line for line in result.out.splitlines() if "q2.fake.json" in line)
    assert line.startswith("MISMATCH")
    assert re.search(r"^ok\s+q8\.fake\.json", result.out, re.M)
    assert re.search(r"^ok\s+ref\.fake\.json", result.out, re.M)
    assert "FAILED" in result.out


def test_verify_reports_a_missing_file(qgate, run):
    paths = run()
    paths["ref"].unlink()
    result = qgate("verify", paths["results"], "-q")
    assert result.code == 1
    assert re.search(r"^missing\s+ref\.fake\.json", result.out, re.M)


def test_verify_finds_moved_files_by_name_under_models(qgate, run, tmp_path):
    paths = run()
    moved = tmp_path / "downloaded"
    (moved / "quants").mkdir(parents=True)
    shutil.move(paths["q8"], moved / "quants" / "q8.fake.json")  # below the folder
    shutil.move(paths["q2"], moved / "q2.fake.json")  # directly in it
    shutil.move(paths["ref"], moved / "ref.fake.json")
    assert qgate("verify", paths["results"], "-q").code == 1  # not at the recorded paths
    result = qgate("verify", paths["results"], "--models", moved, "-q")
    assert result.code == 0, result
    assert str(moved / "quants" / "q8.fake.json") in result.out
    flip_one_byte_keeping_mtime(moved / "q2.fake.json")
    result = qgate("verify", paths["results"], "--models", moved, "-q")
    assert result.code == 1 and "MISMATCH  q2.fake.json" in result.out


def test_verify_exit_2_for_unreadable_results(qgate, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = qgate("verify", garbage)
    assert result.code == 2 and "not a qgate results file" in result.err
    old = tmp_path / "old.json"
    data = RunReport(policy="p").to_dict()
    del data["provenance"]
    old.write_text(json.dumps(data))
    result = qgate("verify", old)
    assert result.code == 2 and "records no file digests" in result.err
    assert qgate("verify", tmp_path / "absent.json").code == 2


def test_verify_checks_every_file_of_a_folder_model(qgate, tmp_path):
    folder = tmp_path / "model-awq"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    record = artifact_record(folder, DigestIndex(None), progress=Progress(enabled=False))
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps({**RunReport(policy="p").to_dict(), "provenance": {"subjects": [record]}})
    )
    assert qgate("verify", results, "-q").code == 0
    flip_one_byte_keeping_mtime(folder / "model.safetensors")
    (folder / "extra.bin").write_bytes(b"x")
    result = qgate("verify", results, "-q")
    assert result.code == 1
    assert re.search(r"^ok\s+model-awq/config\.json", result.out, re.M)
    assert re.search(r"^MISMATCH\s+model-awq/model\.safetensors", result.out, re.M)
    assert re.search(r"^extra\s+model-awq/extra\.bin", result.out, re.M)


# --------------------------------------------------------------------------------------------
# the attestation

DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128, "sha1": 40, "md5": 32}
#: in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)
STATEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_type", "subject", "predicateType", "predicate"],
    "additionalProperties": False,
    "properties": {
        "_type": {"const": "https://in-toto.io/Statement/v1"},
        "subject": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "digest"],
                "properties": {
                    "name": {"type": "string"},
                    "digest": {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": {"pattern": "^[a-z0-9-]+$"},
                        "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"},
                    },
                },
            },
        },
        "predicateType": {"type": "string", "format": "uri", "pattern": "^[a-z][a-z0-9+.-]*://"},
        "predicate": {"type": "object"},
    },
}


def assert_statement_v1(statement: Any) -> None:
    """The Statement's published field list, checked by hand (and by jsonschema if present)."""
    if importlib.util.find_spec("jsonschema") is not None:
        import jsonschema

        jsonschema.validate(statement, STATEMENT_SCHEMA)
    assert isinstance(statement, dict)
    assert set(statement) == {"_type", "subject", "predicateType", "predicate"}
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert isinstance(statement["subject"], list) and statement["subject"]
    for subject in statement["subject"]:
        assert isinstance(subject, dict)
        assert isinstance(subject.get("name"), str) and subject["name"]
        digest = subject.get("digest")
        assert isinstance(digest, dict) and digest
        for algorithm, value in digest.items():
            assert re.fullmatch(r"[a-z0-9-]+", algorithm)
            assert isinstance(value, str) and re.fullmatch(r"[0-9a-f]+", value)
            if algorithm in DIGEST_LENGTHS:
                assert len(value) == DIGEST_LENGTHS[algorithm], algorithm
    assert isinstance(statement["predicateType"], str)
    assert re.match(r"^[a-z][a-z0-9+.-]*://\S+$", statement["predicateType"])
    assert isinstance(statement["predicate"], dict)


def test_attestation_is_an_in_toto_statement_v1(run):
    paths = run()
    statement = json.loads(paths["attestation"].read_text())
    assert_statement_v1(statement)
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [
        {"name": "q8.fake.json", "digest": {"sha256": sha256_of(paths["q8"])}},
        {"name": "q2.fake.json", "digest": {"sha256": sha256_of(paths["q2"])}},
    ]


def test_attestation_predicate_carries_the_verdict_and_what_it_rests_on(run):
    paths = run()
    predicate = json.loads(paths["attestation"].read_text())["predicate"]
    results = json.loads(paths["results"].read_text())
    assert predicate["verdict"] == "fail" and predicate["incomplete"] is False
    assert predicate["policy"] == {
        "name": "unit",
        "sha256": results["provenance"]["policy"]["sha256"],
    }
    verdicts = {s["name"]: s["verdict"] for s in predicate["subjects"]}
    assert verdicts == {"q8.fake.json": "pass", "q2.fake.json": "fail"}
    q2 = next(s for s in predicate["subjects"] if s["name"] == "q2.fake.json")
    assert q2["digest"] == {"sha256": sha256_of(paths["q2"])}
    ppl = next(r for r in q2["results"] if r["name"] == "perplexity.ppl_delta")
    assert ppl["verdict"] == "fail" and ppl["threshold"] == 0.05 and ppl["value"] > 0.05
    assert set(ppl["interval"]) == {"low", "high", "level"}
    assert predicate["reference"]["digest"] == {"sha256": sha256_of(paths["ref"])}
    assert {d["domain"]: d["digest"]["sha256"] for d in predicate["datasets"]} == {
        d["domain"]: d["sha256"] for d in results["provenance"]["datasets"]
    }
    assert predicate["qgateVersion"] == __version__
    assert {
        "plugin": "qgate-llm:perplexity",
        "distribution": "qgate-llm",
        "version": __version__,
    } in (predicate["plugins"])
    assert predicate["startedAt"].endswith("Z") and predicate["finishedAt"].endswith("Z")


def test_attestation_names_each_file_of_a_folder_subject(tmp_path):
    folder = tmp_path / "model-exl2"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"a")
    (folder / "config.json").write_text("{}")
    record = artifact_record(folder, DigestIndex(None), progress=Progress(enabled=False))
    statement = build_statement(RunReport(policy="p", provenance={"subjects": [record]}))
    assert_statement_v1(statement)
    assert [s["name"] for s in statement["subject"]] == [
        "model-exl2/a.safetensors",
        "model-exl2/config.json",
    ]
    assert statement["subject"][0]["digest"]["sha256"] == sha256_of(folder / "a.safetensors")


def test_an_interrupted_run_hashes_nothing_and_is_not_attested(fake, policy_file):
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    runner = Runner(registry, policy, reference=str(fake("ref")))

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    runner._run_subject = interrupt  # type: ignore[method-assign]
    report = runner.run([str(fake("sub"))])
    assert report.incomplete
    assert report.provenance["subjects"][0]["sha256"] is None
    assert "interrupted" in report.provenance["subjects"][0]["note"]
    with pytest.raises(NotAttestable, match="not hashed"):
        build_statement(report)


# --------------------------------------------------------------------------------------------
# the reports' footers


def test_markdown_and_html_footers_show_short_digests_and_versions(run):
    paths = run()
    report = RunReport.from_dict(json.loads(paths["results"].read_text()))
    q2 = sha256_of(paths["q2"])
    policy_digest = report.provenance["policy"]["sha256"]
    text = markdown.MarkdownReporter().render(report)
    assert f"`{q2[:12]}`" in text and q2[:13] not in text
    assert f"`{policy_digest[:12]}`" in text
    assert f"qgate {__version__}" in text and f"numpy {np.__version__}" in text
    assert text.rstrip().splitlines()[-1].startswith("<sub>qgate ")  # the run footer stays last
    page = html.HtmlReporter().render(report)
    assert f">{q2[:12]}</td>" in page and f'title="{q2}"' in page
    assert f"numpy {np.__version__}" in page
    # a report without provenance shows no provenance block
    report.provenance = {}
    assert "sha256:" not in markdown.MarkdownReporter().render(report)
    assert 'class="provenance"' not in html.HtmlReporter().render(report)


def test_footers_escape_hostile_provenance_strings():
    hostile = "<script>alert(1)</script>|[x](y)"
    report = RunReport(
        policy="p",
        provenance={
            "qgate_version": "0.1.0",
            "subjects": [{"name": hostile, "sha256": "<img src=x onerror=alert(1)>"}],
            "plugins": [{"plugin": "x", "distribution": hostile, "version": "<b>1</b>"}],
            "libraries": {"numpy": "<i>2</i>"},
            "machine": {"cpu": hostile},
        },
    )
    text = markdown.MarkdownReporter().render(report)
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "\\|\\[x\\](y)" in text
    page = html.HtmlReporter().render(report)
    assert "<script" not in page and "<img" not in page and "<b>1" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --------------------------------------------------------------------------------------------
# a real GGUF


def test_real_gguf_run_is_attested_and_verified(qgate, tiny_ladder, tmp_path):
    policy = tmp_path / "floor.yaml"
    policy.write_text(
        "name: floor\nchecks:\n  - use: quant-floor\n    options: {min_bits_per_weight: 4.0}\n"
    )
    out, att = tmp_path / "r.json", tmp_path / "a.json"
    result = qgate(
        "check",
        tiny_ladder["Q8_0"],
        "--reference",
        tiny_ladder["F16"],
        "--policy",
        policy,
        "--json",
        out,
        "--attestation",
        att,
        "-q",
    )
    assert result.code == 0, result
    statement = json.loads(att.read_text())
    assert_statement_v1(statement)
    assert statement["subject"][0]["digest"]["sha256"] == sha256_of(tiny_ladder["Q8_0"])
    prov = provenance_of(out)
    assert prov["libraries"]["llama-cpp-python"] != NOT_INSTALLED
    assert prov["libraries"]["gguf"] != NOT_INSTALLED
    assert qgate("verify", out, "-q").code == 0
    copy = tmp_path / "models"
    copy.mkdir()
    shutil.copy(tiny_ladder["Q8_0"], copy / tiny_ladder["Q8_0"].name)
    shutil.copy(tiny_ladder["F16"], copy / tiny_ladder["F16"].name)
    flip_one_byte_keeping_mtime(copy / tiny_ladder["F16"].name)
    result = qgate("verify", out, "--models", copy, "-q")
    assert result.code == 1
    assert re.search(rf"^MISMATCH\s+{re.escape(tiny_ladder['F16'].name)}", result.out, re.M)
