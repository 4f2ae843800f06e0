"""The ``identity`` check and ``qgate inspect --identity``, on tiny real GGUF models built here.

A base (seed 0), a fine-tune of it (same seed plus a perturbation, its own chat template and
finetune name), quants of each, and a "forged" base that carries the fine-tune's metadata: the
case the check exists for, a quant of the base published as the fine-tune's.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate.backend import Backend, TensorMeta, TensorReader
from qgate.errors import BackendError
from qgate.hookspecs import hookimpl
from qgate.plugins import Registry, make_plugin_manager
from qgate.policy import load_policy
from qgate.results import RunReport, SkipCause, SubjectReport, Verdict
from qgate.runner import Runner
from qgate.testing import FakeBackend, read_knobs
from qgate_checks.identity import format_pairwise, pairwise_evidence
from qgate_checks.identity.weights import tensor_sources
from tests.conftest import needs_llama_cpp

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FINETUNE = {"name": "tiny-llama-chat", "finetune": "chat", "chat_template": TEMPLATE}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    from qgate_gguf.quantize import quantize
    from tests.tiny_gguf import write_tiny_llama

    d = tmp_path_factory.mktemp("identity")
    m = {
        "base": write_tiny_llama(d / "base.gguf", seed=0),
        # a light fine-tune: every matrix moved by ~17 % of its scale (cosine ~0.985 to the base)
        "ft": write_tiny_llama(d / "ft.gguf", seed=0, delta={"": 0.01}, **FINETUNE),
        # the base, relabelled as the fine-tune: name, finetune and chat template all claim it
        "forged": write_tiny_llama(d / "forged.gguf", seed=0, **FINETUNE),
        "other": write_tiny_llama(d / "other.gguf", seed=1),
        "wide": write_tiny_llama(d / "wide.gguf", seed=0, n_ff=768),
    }
    for name, source, file_type in (
        ("ft-q8", "ft", "Q8_0"),
        ("ft-q4", "ft", "Q4_K_M"),
        ("base-q4", "base", "Q4_K_M"),
        ("forged-q4", "forged", "Q4_K_M"),
    ):
        m[name] = quantize(m[source], d / f"{name}.gguf", file_type)
    return m


def policy(tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "identity.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: identity-test
            datasets: [en]
            checks:
              - use: identity
                options: {json.dumps({"max_prompts": 3, **options})}
            """
        )
    )
    return path


def run(qgate: Any, tmp_path: Path, subjects: list[Path], reference: Path | None, **options: Any):
    out = tmp_path / "r.json"
    args: list[Any] = ["check", *subjects, "--policy", policy(tmp_path, **options), "--json", out]
    if reference is not None:
        args += ["--reference", reference]
    result = qgate(*args)
    assert result.code in (0, 1), result
    return result.code, RunReport.from_dict(json.loads(out.read_text()))


def by_metric(subject: SubjectReport) -> dict[str, Any]:
    return {r.metric: r for r in subject.results}


# -- the GGUF weights module ---------------------------------------------------------------


@needs_llama_cpp
def test_weights_stream_sample_and_compare(models: dict[str, Path]) -> None:
    from qgate.tensors import sample_rows
    from qgate_gguf.weights import GGUFWeights, compare_files, iter_tensors

    assert list(sample_rows(10, 4, None)) == list(range(10))
    assert list(sample_rows(10, 4, 12)) == [0, 4, 8]  # every 4th row: at most 3 rows of 4
    assert list(sample_rows(3, 100, 10)) == [0]  # always one row at least
    with GGUFWeights(models["ft-q8"]) as weights:
        info = weights.info("blk.0.ffn_up.weight")
        assert info.shape == (256, 512)
        full = weights.read_rows(info.name)
        assert full.dtype == np.float32 and full.shape == (512, 256)
        for rows in ([3, 100, 511], [7, 8, 9, 200, 201], [511, 3], []):
            picked = np.array(rows, dtype=np.int64)
            np.testing.assert_array_equal(weights.read_rows(info.name, picked), full[picked])
        with pytest.raises(IndexError, match=r"rows must be in \[0, 512\)"):
            weights.read_rows(info.name, np.array([0, 512]))
        # read, not memory-mapped: during a run llama.cpp maps the same file already, and a
        # second mapping faulted in around every sampled row would count it twice in the RSS
        if Path("/proc/self/maps").exists():
            assert str(models["ft-q8"].resolve()) not in Path("/proc/self/maps").read_text()
    sampled = {i.name: (rows, v) for i, rows, v in iter_tensors(models["ft"], max_elements=4096)}
    assert all(v.size <= max(4096, v.shape[1]) for _, v in sampled.values())
    assert sampled["token_embd.weight"][1].shape == (16, 256)  # 259 rows, every 17th

    same = compare_files([models["ft"], models["ft"]], max_elements=4096)
    assert all(t.rel_error(0, 1) == 0 and t.cosine(0, 1) == pytest.approx(1) for t in same)
    q8 = compare_files([models["ft-q8"], models["ft"], models["base"]], max_elements=4096)
    matrix = next(t for t in q8 if t.name == "blk.1.attn_q.weight")
    assert matrix.types == ("Q8_0", "F32", "F32")
    assert matrix.rel_error(0, 1) < 0.01 < matrix.rel_error(0, 2)  # far closer to its source
    assert matrix.cosine(0, 1) > 0.9999


@needs_llama_cpp
def test_weights_name_the_file_and_tensor_on_mismatch(models: dict[str, Path], tmp_path: Path):
    from qgate_gguf.weights import compare_files

    with pytest.raises(
        BackendError, match=r"wide\.gguf: tensor 'blk\.0\.ffn_down\.weight' has shape \[768, 256\]"
    ):
        compare_files([models["ft-q4"], models["wide"]])
    data = models["ft"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(BackendError, match=r"cut\.gguf: truncated: tensor 'output\.weight'"):
        compare_files([models["ft-q4"], cut])


# -- the check ------------------------------------------------------------------------------


@needs_llama_cpp
def test_finetune_quants_pass_against_the_finetune_and_not_the_base(
    qgate: Any, tmp_path: Path, models: dict[str, Path]
) -> None:
    code, report = run(
        qgate,
        tmp_path,
        [models["ft-q8"], models["ft-q4"]],
        models["ft"],
        not_from=[str(models["base"])],
    )
    assert code == 0
    for subject in report.subjects:
        results = by_metric(subject)
        assert set(results) == {
            "weight_match_share",
            "weight_closer_share",
            "behaviour_kld_ratio",
            "metadata_match_share",
            "metadata_closer_share",
        }
        assert all(r.verdict is Verdict.PASS for r in results.values()), subject.results
        assert results["weight_closer_share"].value == 1.0
        assert results["weight_closer_share"].details["median_error_ratio"] < 0.5
        assert results["behaviour_kld_ratio"].value < 0.5
        first = subject.results[0]
        assert first.details["decided_by"] == "weights"
        assert "[supporting evidence, weights decided]" in results["behaviour_kld_ratio"].message
        titles = [t.title for t in first.figures.tables]
        assert titles[:3] == [
            "Identity evidence by candidate",
            "Identity metadata (weak evidence: it can be edited)",
            "Tensors least similar to the claim",
        ]
        rows = first.figures.tables[0].rows
        assert [r[:2] for r in rows] == [["ft.gguf", "claim"], ["base.gguf", "not_from"]]
        assert rows[1][6].startswith("100% of 16")  # 16 matrices differ; 5 norm vectors are shared


@needs_llama_cpp
def test_base_quant_claimed_as_the_finetune_fails_even_with_forged_metadata(
    qgate: Any, tmp_path: Path, models: dict[str, Path]
) -> None:
    not_from = [str(models["base"])]
    code, report = run(
        qgate, tmp_path, [models["forged-q4"], models["base-q4"]], models["ft"], not_from=not_from
    )
    assert code == 1
    forged, honest = (by_metric(s) for s in report.subjects)
    for results in (forged, honest):
        assert results["weight_closer_share"].verdict is Verdict.FAIL
        assert results["weight_closer_share"].value == 0.0
        # the behaviour says the same (reported as supporting evidence: a warn, never a block)
        assert results["behaviour_kld_ratio"].value > 2.0
        assert results["behaviour_kld_ratio"].verdict is Verdict.WARN
    # the forged metadata claims the fine-tune, and metadata alone would have believed it
    assert forged["metadata_match_share"].value == 1.0
    assert forged["metadata_closer_share"].verdict is Verdict.PASS
    assert honest["metadata_closer_share"].value == 0.0

    # with the weights out of the picture, the behaviour decides, and fails it too
    code, report = run(
        qgate, tmp_path, [models["forged-q4"]], models["ft"], not_from=not_from, weights=False
    )
    assert code == 1
    results = by_metric(report.subjects[0])
    assert report.subjects[0].results[0].details["decided_by"] == "behaviour"
    assert results["behaviour_kld_ratio"].verdict is Verdict.FAIL
    assert results["metadata_match_share"].verdict is Verdict.PASS  # fooled, and outvoted


@needs_llama_cpp
def test_without_not_from_a_quant_of_the_reference_passes_another_model_fails(
    qgate: Any, tmp_path: Path, models: dict[str, Path]
) -> None:
    code, report = run(
        qgate,
        tmp_path,
        [models["ft-q4"], models["base-q4"]],
        models["other"],
        claimed_source=str(models["ft"]),  # the claim need not be the reference
        behaviour="fallback",
    )
    quant, unrelated = (by_metric(s) for s in report.subjects)
    assert quant["weight_match_share"].verdict is Verdict.PASS
    assert quant["weight_match_share"].value == 1.0
    assert "behaviour_kld" not in quant  # fallback: the weights decided, nothing was loaded
    # a quant of the base, claimed as the fine-tune: every matrix is within cosine 0.99 of it,
    # so without not_from the weights pass it; only `not_from: [base]` tells the two apart
    assert unrelated["weight_match_share"].value == 1.0

    code, report = run(qgate, tmp_path, [models["ft-q4"]], models["other"], behaviour="never")
    assert code == 1
    results = by_metric(report.subjects[0])
    assert results["weight_match_share"].verdict is Verdict.FAIL
    assert results["weight_match_share"].value == 0.0


@needs_llama_cpp
def test_truncated_or_mismatched_candidates_are_clear_errors(
    qgate: Any, tmp_path: Path, models: dict[str, Path]
) -> None:
    data = models["base"].read_bytes()
    cut = tmp_path / "base-cut.gguf"
    cut.write_bytes(data[: len(data) - 5000])
    for bad, message in (
        (cut, "cannot read the not_from model: .*base-cut.gguf: truncated: tensor 'output.weight'"),
        (
            models["wide"],
            r"weight comparison: .*wide\.gguf: tensor 'blk\.0\.ffn_down\.weight' has shape \[768, 256\]",
        ),
        (tmp_path / "missing.gguf", "the not_from model .*missing.gguf does not exist"),
    ):
        code, report = run(qgate, tmp_path, [models["ft-q4"]], models["ft"], not_from=[str(bad)])
        assert code == 1
        (result,) = report.subjects[0].results
        assert result.verdict is Verdict.ERROR
        assert "traceback" not in result.details  # an expected error, not a crash
        assert re.search(message, result.message), result.message


@needs_llama_cpp
def test_inspect_identity(qgate: Any, models: dict[str, Path]) -> None:
    result = qgate("inspect", models["ft-q4"], "--identity", models["ft"])
    assert result.code == 0, result
    assert "metadata (9/9 comparable fields equal" in result.out
    assert "weights (21 tensors, 16 of them matrices" in result.out
    assert "summary: consistent with one being a quant of the other" in result.out

    result = qgate("inspect", models["base-q4"], "--identity", models["other"], "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["weights"]["tensors"] == 21 and data["weights"]["match_share"] == 0.0
    differing = {row["field"] for row in data["metadata"] if row["same"] is False}
    assert differing == set()  # same architecture, tokenizer and name: only weights tell

    result = qgate("inspect", models["ft-q4"], "--identity", models["wide"])
    assert result.code == 2  # a clear error about an input file, not a crash
    assert "wide.gguf: tensor 'blk.0.ffn_down.weight' has shape" in result.err


# -- on the fake backend: no weights, so behaviour (or metadata) decides ---------------------


def test_behaviour_decides_without_weights(qgate: Any, tmp_path: Path, fake: Any) -> None:
    ref = fake("claim", seed=0)
    other = fake("other", seed=5)
    quant = fake("quant", seed=0, noise=0.3)
    impostor = fake("impostor", seed=5, noise=0.3)
    code, report = run(qgate, tmp_path, [quant, impostor], ref, not_from=[str(other)])
    assert code == 1
    good, bad = report.subjects
    assert good.results[0].details["decided_by"] == "behaviour"
    assert "needs GGUF files" in good.results[0].details["undecided"]["weights"]
    assert by_metric(good)["behaviour_kld_ratio"].verdict is Verdict.PASS
    assert by_metric(bad)["behaviour_kld_ratio"].verdict is Verdict.FAIL
    assert by_metric(good)["behaviour_kld_ratio"].interval is not None


def test_metadata_decides_only_when_nothing_else_can(qgate: Any, tmp_path: Path, fake: Any) -> None:
    ref = fake("claim", metadata={"identity": {"name": "claim", "finetune": "chat"}})
    other = fake("base", metadata={"identity": {"name": "claim"}})
    quant = fake("q", noise=0.3, metadata={"identity": {"name": "claim", "finetune": "chat"}})
    code, report = run(qgate, tmp_path, [quant], ref, not_from=[str(other)], behaviour="never")
    assert code == 0
    (subject,) = report.subjects
    assert subject.results[0].details["decided_by"] == "metadata"
    assert by_metric(subject)["metadata_closer_share"].value == 1.0


def test_without_a_claim_it_cannot_measure_and_blocks(
    qgate: Any, tmp_path: Path, fake: Any
) -> None:
    code, report = run(qgate, tmp_path, [fake("q")], None)
    assert code == 1
    results = report.subjects[0].results
    (result,) = [r for r in results if r.check == "identity"]
    assert result.verdict is Verdict.ERROR and "claimed_source" in result.message
    assert result.skip_cause is SkipCause.UNAVAILABLE


def test_undecidable_is_on_inconclusive(qgate: Any, tmp_path: Path, fake: Any) -> None:
    # no weights (fake models), no behaviour, and the claim and the not_from model carry the same
    # metadata: nothing can tell them apart, and the check says so instead of guessing
    same = {"identity": {"name": "m"}}
    ref, twin = fake("claim", metadata=same), fake("twin", metadata=same)
    code, report = run(
        qgate,
        tmp_path,
        [fake("q", noise=0.2, metadata=same)],
        ref,
        not_from=[str(twin)],
        behaviour="never",
    )
    assert code == 0
    first = report.subjects[0].results[0]
    assert first.metric == "identity"
    assert first.verdict is Verdict.WARN  # the policy's default on_inconclusive
    assert "no evidence can tell the candidates apart" in first.message
    assert first.details["decided_by"] is None


# -- qgate identity: the command the identity plugin registers -------------------------------


@needs_llama_cpp
def test_identity_command_prints_what_inspect_identity_prints(
    qgate: Any, models: dict[str, Path]
) -> None:
    for extra in ([], ["--json"]):
        command = qgate("identity", models["ft-q4"], models["ft"], *extra)
        alias = qgate("inspect", models["ft-q4"], "--identity", models["ft"], *extra)
        assert command.code == alias.code == 0, command
        if extra:  # the same evidence; only the time it took may differ
            data, again = json.loads(command.out), json.loads(alias.out)
            data["weights"].pop("seconds"), again["weights"].pop("seconds")
            assert data == again
            assert data["weights"]["tensors"] == 21
        else:
            assert re.sub(r"[\d.]+s\)", "", command.out) == re.sub(r"[\d.]+s\)", "", alias.out)
            assert "summary: consistent with one being a quant of the other" in command.out
    result = qgate("identity", models["ft-q4"], models["wide"])
    assert result.code == 2
    assert "wide.gguf: tensor 'blk.0.ffn_down.weight' has shape" in result.err
    result = qgate("identity", models["ft-q4"], models["ft"].parent / "missing.gguf")
    assert result.code == 2 and "model not found" in result.err


def test_identity_command_without_tensors_compares_the_metadata(qgate: Any, fake: Any) -> None:
    result = qgate("identity", fake("a"), fake("b"), "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert "hands out tensors" in data["weights"]["unavailable"]
    assert {row["field"] for row in data["metadata"]} >= {"architecture", "name"}
    text = qgate("identity", fake("a"), fake("b")).out
    assert "weights: unavailable: needs GGUF files" in text


# -- the weights through any backend's tensor reader (no format is special) ------------------


class ArrayReader(TensorReader):
    """Tensors held in memory: two matrices and a norm vector drawn from the fake model's
    ``seed``, moved by its ``noise`` (the quantization error)."""

    def __init__(self, knobs: dict[str, Any]):
        rng = np.random.default_rng(knobs["seed"])
        moved = np.random.default_rng(1000 + knobs["noise_seed"])
        self.arrays: dict[str, np.ndarray] = {}
        for name, shape in (("a.weight", (16, 32)), ("b.weight", (8, 32)), ("norm", (1, 32))):
            clean = rng.standard_normal(shape).astype(np.float32)
            self.arrays[name] = clean + knobs["noise"] * moved.standard_normal(shape)
        self.tensors = [
            TensorMeta(
                name,
                (a.shape[1], a.shape[0]) if a.shape[0] > 1 else (a.shape[1],),
                "F32",
                a.shape[0],
                a.shape[1],
            )
            for name, a in self.arrays.items()
        ]
        self.closed = False

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.arrays[name][rows].astype(np.float32)

    def close(self) -> None:
        self.closed = True


class TensorFakeBackend(FakeBackend):
    """The fake backend, able to hand out tensors."""

    def tensor_reader(self, path: Path) -> TensorReader:
        return ArrayReader(read_knobs(path))


class TensorFakePlugin:
    @hookimpl
    def qgate_backends(self) -> list[Backend]:
        return [TensorFakeBackend()]


def test_weights_decide_for_any_backend_that_hands_out_tensors(fake: Any, tmp_path: Path) -> None:
    registry = Registry(make_plugin_manager(block=["fake"], plugins=[TensorFakePlugin()]))
    options = {"not_from": [str(fake("base", seed=5))]}
    loaded = load_policy(str(policy(tmp_path, **options)), registry.check_objects())
    report = Runner(registry, loaded, reference=str(fake("claim", seed=0))).run(
        [str(fake("quant", seed=0, noise=0.2)), str(fake("impostor", seed=5, noise=0.2))]
    )
    quant, impostor = (
        {r.metric: r for r in s.results if r.check == "identity"} for s in report.subjects
    )
    assert quant["weight_match_share"].details["decided_by"] == "weights"
    assert quant["weight_match_share"].verdict is Verdict.PASS
    assert quant["weight_closer_share"].value == 1.0
    assert impostor["weight_closer_share"].verdict is Verdict.FAIL
    assert impostor["weight_closer_share"].value == 0.0


def test_pairwise_evidence_reads_tensors_through_the_backend(fake: Any) -> None:
    backend = TensorFakeBackend()
    paths = [fake("a", seed=0), fake("b", seed=0, noise=0.2)]
    infos = [backend.inspect(p) for p in paths]
    with tensor_sources(
        [(backend, p, i.format) for p, i in zip(paths, infos, strict=True)]
    ) as sources:
        data = pairwise_evidence(infos[0], infos[1], sources)
        readers = list(sources.readers)
    assert all(isinstance(r, ArrayReader) and r.closed for r in readers)  # closed on exit
    weights = data["weights"]
    assert weights["tensors"] == 3 and weights["matrices"] == 2
    assert weights["match_share"] == 1.0
    assert "consistent with one being a quant of the other" in format_pairwise(data)
