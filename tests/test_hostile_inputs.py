"""Hostile metadata and smaller holes (issue 19, classes 8 and 9): qgate fails closed.

A model's config, a results file, a policy or a file name is input that an attacker (or a
careless tool) controls. Each test here built an input that made the old code crash, hang,
read outside where it was pointed, merge something silently, or drive the terminal, and checks
that qgate now gives one of its own errors, or writes the report with the text made harmless.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import signal
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate.errors import BackendError, PolicyError
from qgate.hashing import DigestIndex
from qgate.policy.loader import load_policy_file
from qgate.progress import Progress
from qgate.provenance import artifact_record
from qgate.results import CheckResult, Comparison, Interval, RunReport, SubjectReport, Verdict
from qgate.testing import write_fake_model
from qgate.text import printable
from qgate.verify import REFUSED, Refused, read_digest, verify
from qgate_reporters import console, html, json_report, junit, markdown
from tests.conftest import HAVE_GGUF

HAVE_SAFETENSORS = importlib.util.find_spec("safetensors") is not None
needs_safetensors = pytest.mark.skipif(
    not HAVE_SAFETENSORS, reason="needs safetensors to write model folders: pip install safetensors"
)
needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="needs gguf: pip install -e '.[gguf]'")

#: lone surrogates, as a ``"\ud800"`` JSON escape decodes, plus the characters that break
#: terminals and XML: NUL, ESC sequences, C1 controls, bidi overrides, XML's non-characters
SURROGATES = "lo\ud800ne\udfff"
CONTROLS = "nul\x00bel\x07esc\x1b[2Jcsi\x9b31mvt\x0bff\x0cdel\x7frlo\u202eend\ufffe\uffff"
EVIL = f"{SURROGATES}|{CONTROLS}"

STATIC_POLICY = """\
name: static
checks:
  - use: quant-floor
    options: {min_bits_per_weight: 2.0}
"""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail the test instead of hanging it (a FIFO opened for reading blocks forever)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# class 8: hostile numbers in a Hugging Face config.json (hf, exl2 and awq read it alike)


def write_folder(
    folder: Path, config: str | dict[str, Any], files: dict[str, str | bytes] | None = None
) -> Path:
    """A minimal model folder: ``config.json`` (text as given), one small safetensors file."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    tensors = {"model.embed_tokens.weight": np.ones((8, 4), np.float16)}
    save_file(tensors, str(folder / "model.safetensors"))
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text, encoding="utf-8")
    for name, data in (files or {}).items():
        if isinstance(data, bytes):
            (folder / name).write_bytes(data)
        else:
            (folder / name).write_text(data, encoding="utf-8")
    return folder


def hf_inspect(folder: Path) -> Any:
    from qgate_hf import HFBackend

    return HFBackend().inspect(folder)


@needs_safetensors
@pytest.mark.parametrize(
    ("config", "says"),
    [
        (
            '{"vocab_size": 1e999}',
            "vocab_size: expected a whole number from 1 to 4294967296, got a non-finite number (inf)",
        ),
        (
            '{"vocab_size": -1e999}',
            "vocab_size: expected a whole number from 1 to 4294967296, got a non-finite number (-inf)",
        ),
        (
            '{"vocab_size": NaN}',
            "vocab_size: expected a whole number from 1 to 4294967296, got a non-finite number (nan)",
        ),
        ('{"vocab_size": Infinity}', "got a non-finite number (inf)"),
        (
            '{"vocab_size": -32000}',
            "vocab_size: expected a whole number from 1 to 4294967296, got -32000",
        ),
        ('{"vocab_size": 0}', "vocab_size: expected a whole number from 1 to 4294967296, got 0"),
        (
            '{"vocab_size": 3.5}',
            "vocab_size: expected a whole number from 1 to 4294967296, got a fraction (3.5)",
        ),
        (
            '{"vocab_size": "32000"}',
            'vocab_size: expected a whole number from 1 to 4294967296, got string "32000"',
        ),
        ('{"vocab_size": true}', "got boolean true"),
        ('{"vocab_size": [32000]}', "got list [32000]"),
        ('{"vocab_size": {"n": 1}}', 'got object {"n": 1}'),
        ('{"vocab_size": 1' + "0" * 400 + "}", "got an integer of about 400 digits"),
        ('{"max_position_embeddings": 1e999}', "max_position_embeddings: expected a whole number"),
        (
            '{"max_position_embeddings": 99999999999999}',
            "max_position_embeddings: expected a whole number from 1 to 4294967296, got 99999999999999",
        ),
        (
            '{"num_local_experts": 1e999}',
            "num_local_experts: expected a whole number from 0 to 65536",
        ),
        ('{"num_experts": -4}', "num_experts: expected a whole number from 0 to 65536, got -4"),
        (
            '{"text_config": {"vocab_size": 1e999}}',
            "text_config.vocab_size: expected a whole number",
        ),
        # what Python's json raises besides JSONDecodeError
        ('{"vocab_size": ' + "9" * 5000 + "}", "config.json: not valid JSON: Exceeds the limit"),
        ("[" * 100_000, "config.json: not valid JSON: maximum recursion depth exceeded"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_absurd_config_numbers_are_a_clear_error(tmp_path: Path, config: str, says: str) -> None:
    """Old code: OverflowError (``int(inf)``), ValueError, RecursionError, or a silent None."""
    folder = write_folder(tmp_path / "model", config)
    with pytest.raises(BackendError) as exc:
        hf_inspect(folder)
    assert says in str(exc.value)
    assert str(folder / "config.json") in str(exc.value)


@needs_safetensors
def test_sane_config_numbers_still_read(tmp_path: Path) -> None:
    config = {"vocab_size": 32000.0, "max_position_embeddings": 4096, "num_local_experts": 0}
    config["num_experts"] = 8
    info = hf_inspect(write_folder(tmp_path / "model", config))
    assert (info.vocab_size, info.context_length, info.expert_count) == (32000, 4096, 8)
    nested = {"vocab_size": 1e999, "text_config": {"vocab_size": 262144}}  # text_config wins
    assert hf_inspect(write_folder(tmp_path / "mm", nested)).vocab_size == 262144


@needs_safetensors
@pytest.mark.parametrize(
    ("quantization_config", "says"),
    [
        (
            {"quant_method": "awq", "bits": "1e999"},
            "quantization_config.bits: expected a finite number, got inf",
        ),
        (
            {"quant_method": "awq", "bits": 4, "group_size": "1e999"},
            "quantization_config.group_size: expected a finite number",
        ),
        (
            {"quant_method": "awq", "bits": 4, "group_size": "NaN"},
            "quantization_config.group_size: expected a finite number, got nan",
        ),
        (
            {"quant_method": "exl2", "bits": "1" + "0" * 400},
            "quantization_config.bits: absurd number an integer of about 400 digits",
        ),
        (
            {"quant_method": "exl2", "bits": 4.0, "calibration": {"rows": "-1e999"}},
            "quantization_config.calibration.rows: expected a finite number, got -inf",
        ),
    ],
    ids=["awq-bits", "awq-group", "awq-nan-group", "exl2-huge-bits", "exl2-nested"],
)
def test_absurd_quantization_config_is_a_clear_error(
    tmp_path: Path, quantization_config: dict[str, Any], says: str
) -> None:
    """Old code: ``int(1e999)`` in the awq backend raised OverflowError; ``float(10**400)`` in
    the exl2 one too. The numbers are spliced in as JSON text (json.dumps cannot write them)."""
    from qgate_awq import AWQBackend
    from qgate_exl2 import EXL2Backend

    text = json.dumps({"vocab_size": 32, "quantization_config": quantization_config})
    text = re.sub(r'"(1e999|-1e999|NaN|10{400})"', r"\1", text)
    folder = write_folder(tmp_path / "model", text)
    backend = AWQBackend() if quantization_config["quant_method"] == "awq" else EXL2Backend()
    with pytest.raises(BackendError) as exc:
        backend.inspect(folder)
    assert says in str(exc.value)


@needs_safetensors
@pytest.mark.parametrize(
    ("tokenizer", "says"),
    [
        ('{"model": {"vocab": {"a": 1e999}}}', "token id Infinity is not a whole number"),
        (
            '{"model": {"vocab": {"a": 1000000000000000}}}',
            "token id 1000000000000000 is not a whole number from 0 to 16777215",
        ),
        ('{"model": {"vocab": {"a": -1}}}', "token id -1 is not a whole number"),
        ('{"model": {"vocab": {"a": "7"}}}', 'token id "7" is not a whole number'),
        ('{"model": {}, "added_tokens": [{"id": 1e999, "content": "x"}]}', "token id Infinity"),
        ('{"model": {"vocab": [7]}}', "model.vocab[0]: expected [piece, score]"),
        ('{"model": "bpe"}', "not a tokenizers file"),
        ("[1, 2]", "not a tokenizers file"),
    ],
    ids=[
        "inf-id",
        "huge-id",
        "negative-id",
        "string-id",
        "inf-added",
        "unigram",
        "model-str",
        "list",
    ],
)
def test_hostile_tokenizer_json_is_a_clear_error(tmp_path: Path, tokenizer: str, says: str) -> None:
    """Old code: OverflowError, ValueError, AttributeError, or a list of 10^15 entries (a hang
    and then MemoryError) built for the largest token id."""
    folder = write_folder(tmp_path / "model", {"vocab_size": 8}, {"tokenizer.json": tokenizer})
    with time_limit(20), pytest.raises(BackendError) as exc:
        hf_inspect(folder)
    assert says in str(exc.value) and "tokenizer.json" in str(exc.value)


@needs_safetensors
def test_lone_surrogates_in_a_config_become_replacement_characters(tmp_path: Path) -> None:
    """Old code: ``sha256(template.encode())`` raised UnicodeEncodeError on the template."""
    folder = write_folder(
        tmp_path / "model",
        '{"_name_or_path": "na\\ud800me", "model_type": "\\udfff", "vocab_size": 8}',
        {"tokenizer_config.json": '{"chat_template": "{{ m }}\\ud800"}'},
    )
    info = hf_inspect(folder)
    assert info.identity["name"] == "na\ufffdme" and info.identity["model_type"] == "\ufffd"
    assert info.chat_template == "{{ m }}\ufffd"
    json.dumps(info.identity, ensure_ascii=False).encode("utf-8")  # writable now


@needs_safetensors
def test_a_chat_template_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "model", {"vocab_size": 8}, {"chat_template.jinja": b"\xff"})
    with pytest.raises(BackendError, match=r"chat_template\.jinja: not UTF-8 text"):
        hf_inspect(folder)


def _safetensors(header: dict[str, Any], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@needs_safetensors
@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F16", "shape": [1e999], "data_offsets": [0, 8]},
        {"dtype": "F16", "shape": [-2, -2], "data_offsets": [0, 8]},
        {"dtype": "F16", "shape": ["2", "2"], "data_offsets": [0, 8]},
        {"dtype": "F16", "shape": [2.5, 1.6], "data_offsets": [0, 8]},
        {"dtype": "F16", "shape": [4], "data_offsets": [0, 8.0]},
    ],
    ids=["inf-dim", "negative-dims", "string-dims", "fraction-dims", "float-offset"],
)
def test_hostile_safetensors_shapes_are_refused(tmp_path: Path, entry: dict[str, Any]) -> None:
    """Old code: OverflowError for ``int(inf)``; ``[-2, -2]`` passed as 4 elements, ``"2"``
    and ``2.5`` were taken as numbers."""
    from qgate_transformers.safetensors_header import read_safetensors_header

    text = json.dumps({"t": entry}).replace('"1e999"', "1e999")
    file = tmp_path / "w.safetensors"
    raw = text.encode()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(BackendError, match="corrupt safetensors header entry for 't'"):
        read_safetensors_header(file)


@needs_safetensors
def test_a_tensor_in_two_weight_files_is_refused(tmp_path: Path) -> None:
    """Old code: the second file's entry silently replaced the first's."""
    from safetensors.numpy import save_file

    folder = write_folder(tmp_path / "model", {"vocab_size": 8})
    save_file(
        {"model.embed_tokens.weight": np.ones((8, 4), np.float16)}, str(folder / "z.safetensors")
    )
    with pytest.raises(BackendError, match=r"'model\.embed_tokens\.weight' is in both"):
        hf_inspect(folder)


@needs_safetensors
def test_a_hostile_config_is_one_error_result_and_reports_are_written(
    qgate: Any, tmp_path: Path
) -> None:
    """Through the CLI: the subject is an error result naming the file and key (exit 1), the
    other subject is still judged, and every report is written."""
    bad = write_folder(tmp_path / "inf-vocab", '{"vocab_size": 1e999}')
    good = write_fake_model(tmp_path / "good.fake.json")
    policy = tmp_path / "static.yaml"
    policy.write_text(STATIC_POLICY)
    out = tmp_path / "out"
    result = qgate(
        "check", bad, good, "--policy", policy, "-q", "--json", out / "r.json",
        "--html", out / "r.html", "--markdown", out / "r.md", "--junit", out / "r.xml",
    )  # fmt: skip
    assert result.code == 1, result
    assert "Traceback" not in result.err
    data = json.loads((out / "r.json").read_text())
    bad_subject, good_subject = data["subjects"]
    assert [r["verdict"] for r in bad_subject["results"]] == ["error"]
    assert "vocab_size: expected a whole number" in bad_subject["results"][0]["message"]
    assert "error" not in {r["verdict"] for r in good_subject["results"]}
    assert all((out / f"r.{ext}").stat().st_size for ext in ("html", "md", "xml"))


# --------------------------------------------------------------------------------------------
# class 8: every reporter writes any string


FILE_REPORTERS = {
    "json": json_report.JsonReporter,
    "junit": junit.JUnitReporter,
    "html": html.HtmlReporter,
    "markdown": markdown.MarkdownReporter,
}


def evil_report(text: str = EVIL) -> RunReport:
    """A report with ``text`` in every field a model, a plugin or a results file can fill."""
    result = CheckResult(
        check=text,
        check_id=text,
        metric=text,
        verdict=Verdict.FAIL,
        message=f"message {text}\nsecond line",
        value=2.0,
        threshold=1.0,
        comparison=Comparison.LE,
        interval=Interval(1.5, 2.5),
        unit=text,
        details={
            text: {text: [text, 1.0]},
            "traceback": f"Traceback {text}",
            "tables": [{"title": text, "columns": [text, "b"], "rows": [[text, text], [1, text]]}],
            "samples": [{"prompt": text, "subject": text, "reference": text, "note": text}],
            "series": [
                {
                    "title": text,
                    "x_label": text,
                    "y_label": text,
                    "lines": [{"name": text, "x": [0, 1], "y": [0.1, 0.2]}],
                }
            ],
        },
    )
    error = CheckResult(
        check="identity", check_id="identity", metric="", verdict=Verdict.ERROR, message=text
    )
    subject = SubjectReport(
        path=f"/models/{text}.gguf",
        backend=text,
        info={
            "label": text,
            "format": text,
            "architecture": text,
            "file_type": text,
            "chat_template": text,
            "identity": {text: text},
            "tensor_types": {text: 3},
            text: text,
        },
        results=[result, error],
    )
    return RunReport(
        policy=text,
        subjects=[subject],
        reference={"path": text, "backend": text, "info": {"label": text}},
        qgate_version=text,
        counters={text: 1, "model_loads": 2},
        environment={text: text},
        provenance={
            "subjects": [{"name": text, "path": text, "sha256": text}],
            "policy": {"name": text, "sha256": "ab" * 32},
            "machine": {"system": text, "cpu": text, "gpus": [text]},
            "libraries": {text: text},
        },
    )


@pytest.mark.parametrize("name", sorted(FILE_REPORTERS))
def test_every_file_reporter_writes_lone_surrogates_and_controls(name: str, tmp_path: Path) -> None:
    """Old code: ``write_text`` raised UnicodeEncodeError for the html, json and markdown
    reports: one ``"\\ud800"`` in a config value and no report was written."""
    reporter = FILE_REPORTERS[name]()
    target = tmp_path / f"report.{name}"
    reporter.write(evil_report(), target)
    text = target.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    assert "\ufffd" in text or name == "junit"  # junit drops what XML forbids, surrogates too
    assert not re.search("[\ud800-\udfff]", text)
    if name == "json":
        data = json.loads(text)
        assert data["subjects"][0]["info"]["label"] == EVIL.replace("\ud800", "\ufffd").replace(
            "\udfff", "\ufffd"
        )
    elif name == "junit":
        assert_junit_parses(text)
    elif name == "html":
        HTMLParser().feed(text)
    else:
        assert "\x00" not in text and "\x1b" not in text


def assert_junit_parses(text: str) -> None:
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    forbidden = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
    assert not forbidden.search(text)


def test_junit_survives_every_control_character_in_every_field() -> None:
    """NUL, every C0 and C1 control, XML's non-characters U+FFFE/U+FFFF and surrogates, in
    labels, messages, properties and metric names: the XML still parses."""
    every = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]) + "\ufffe\uffff\ud800"
    text = junit.JUnitReporter().render(evil_report(every))
    assert_junit_parses(text)
    root = ET.fromstring(text.encode("utf-8"))
    assert root.find(".//failure") is not None and root.find(".//error") is not None


def test_console_output_cannot_drive_the_terminal() -> None:
    """Old code printed the counter names and qgate version raw (ESC included)."""
    text = console.ConsoleReporter().render(evil_report())
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e\ud800-\udfff]", text)
    text.encode("utf-8")


def test_markdown_escapes_counter_names() -> None:
    """Old code: a counter name from a results file went into the footer as Markdown."""
    report = RunReport(
        policy="p",
        counters={"[click](https://evil.example)": 1, "<img src=x onerror=alert(1)>": 2, "a|b": 3},
    )
    text = markdown.MarkdownReporter().render(report)
    footer = next(line for line in text.splitlines() if line.startswith("<sub>qgate "))
    assert "[click](" not in footer and "\\[click\\]" in footer
    assert "<img" not in footer and "&lt;img src=x onerror=alert(1)&gt;" in footer
    assert "a\\|b: 3" in footer


def test_a_results_file_with_lone_surrogates_renders_through_the_cli(
    qgate: Any, tmp_path: Path
) -> None:
    """``qgate report`` of a results file whose strings hold ``"\\ud800"`` escapes (what a
    config value becomes): every report is written, the exit code is the verdict's."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps(evil_report(f"m{SURROGATES}").to_dict()))  # ASCII escapes
    out = tmp_path / "out"
    result = qgate(
        "report", results, "--json", out / "r.json", "--html", out / "r.html",
        "--markdown", out / "r.md", "--junit", out / "r.xml",
    )  # fmt: skip
    assert result.code == 1, result  # a fail and an error result
    for ext in ("json", "html", "md"):
        assert "\ufffd" in (out / f"r.{ext}").read_text(encoding="utf-8")
    assert_junit_parses((out / "r.xml").read_text(encoding="utf-8"))


def test_a_model_label_with_surrogates_and_escapes_end_to_end(qgate: Any, tmp_path: Path) -> None:
    """A fake model whose metadata carries a lone surrogate and an ANSI escape: the run
    passes and writes every report (old code: 'could not write reports' for four of them)."""
    ref = write_fake_model(tmp_path / "ref.fake.json")
    label = "evil\ud800\x1b[2J\u202e"
    meta = {"label": label, "architecture": label, "identity": {label: label}}
    subject = write_fake_model(tmp_path / "evil.fake.json", metadata=meta)
    policy = tmp_path / "static.yaml"
    policy.write_text(STATIC_POLICY)
    out = tmp_path / "out"
    result = qgate(
        "check", subject, "--reference", ref, "--policy", policy, "--json", out / "r.json",
        "--html", out / "r.html", "--markdown", out / "r.md", "--junit", out / "r.xml",
    )  # fmt: skip
    assert result.code == 0, result
    assert "could not write" not in result.err
    assert "\x1b" not in result.out and "\x1b" not in result.err
    for ext in ("json", "html", "md"):
        assert "evil\ufffd" in (out / f"r.{ext}").read_text(encoding="utf-8")
    assert_junit_parses((out / "r.xml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# class 9: progress logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_type", [io.StringIO, _Terminal], ids=["log", "terminal"])
def test_progress_strips_escapes_and_controls_from_labels(stream_type: type[io.StringIO]) -> None:
    """Old code printed a model label as it was: ``\\x1b[2J`` cleared the screen, ``\\x1b]0;``
    set the window title, and a newline forged a log line of its own."""
    stream = stream_type()
    progress = Progress(stream, interval=0.0)
    label = "m\x1b[2J\x1b]0;pwned\x07\x1b]8;;https://evil\x1b\\link\x1b]8;;\x1b\\\nqgate: PASS\x9b1m\u202e"
    progress.log(f"loading {label} (gguf)")
    progress.update(f"hashing {label}", 1, 2, label)
    progress.update(f"hashing {label}", 2, 2, label)
    text = stream.getvalue()
    if stream_type is _Terminal:  # qgate's own redraw sequence, and nothing else
        text = text.replace("\r\033[K", "")
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", text), repr(text)
    assert "pwned" not in text and "https://evil" not in text
    assert "qgate: loading mlink qgate: PASS (gguf)" in text  # one line, not two


def test_printable_keeps_ordinary_text() -> None:
    assert printable("Qwen2.5 7B · 日本語 · café [Q4_K_M] 100%") == (
        "Qwen2.5 7B · 日本語 · café [Q4_K_M] 100%"
    )
    assert printable("a\tb\r\nc\ud800") == "a b  c\ufffd"


# --------------------------------------------------------------------------------------------
# class 9: duplicate keys in a policy


DUPLICATE_CHECKS = """\
name: dup
checks:
  - use: perplexity
    options: {max_delta: 0.01}
description: a second checks key further down replaced the first one
backend:
  n_ctx: 256
evaluation:
  chunks: 4
  looks: 1
checks:
  - use: quant-floor
"""


def test_duplicate_top_level_key_names_both_lines(tmp_path: Path) -> None:
    """Old code: the last ``checks:`` silently won, and the perplexity gate was gone."""
    path = tmp_path / "policy.yaml"
    path.write_text(DUPLICATE_CHECKS)
    with pytest.raises(PolicyError) as exc:
        load_policy_file(path)
    assert str(exc.value) == f"{path}: duplicate key 'checks' at lines 2 and 11"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "checks:\n  - use: perplexity\n    options:\n      max_delta: 0.01\n      max_delta: 0.5\n",
            "duplicate key 'max_delta' at lines 4 and 5",
        ),
        (
            "checks:\n  - {use: perplexity, use: quant-floor}\n",
            "duplicate key 'use' at line 2, columns 6 and 23",
        ),
        (
            "backend: {n_ctx: 1}\nname: x\nbackend: {n_ctx: 2}\n",
            "duplicate key 'backend' at lines 1 and 3",
        ),
        ("datasets:\n  - {domain: en, file: a.txt, file: b.txt}\n", "duplicate key 'file'"),
        ('"name": a\nname: b\n', "duplicate key 'name' at lines 1 and 2"),
    ],
    ids=["options", "flow", "backend", "list-item", "quoted"],
)
def test_duplicate_keys_are_refused_at_any_depth(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=re.escape(says)):
        load_policy_file(path)


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "x-base: &base {n_ctx: 512, threads: 2}\nbackend:\n  <<: *base\n  n_ctx: 1024\n"
    )
    assert load_policy_file(path)["backend"] == {"n_ctx": 1024, "threads": 2}


def test_duplicate_key_through_the_cli(qgate: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(DUPLICATE_CHECKS)
    result = qgate("policy", "validate", path)
    assert result.code == 2, result
    assert "policy.yaml: duplicate key 'checks' at lines 2 and 11" in result.err


# --------------------------------------------------------------------------------------------
# class 9: qgate verify reads only what it may


def results_file(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps({**RunReport(policy="p").to_dict(), "provenance": {"subjects": records}})
    )
    return path


def file_record(path: Path, **overrides: Any) -> dict[str, Any]:
    record = artifact_record(path, DigestIndex(None), progress=Progress(enabled=False))
    return {**record, **overrides}


def test_verify_refuses_a_fifo_at_the_recorded_path_without_hanging(tmp_path: Path) -> None:
    """Old code: ``is_file()`` said False, so it was 'missing'; in a folder model (below) it
    was opened, and the open blocked forever."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    record = file_record(model)
    model.unlink()
    os.mkfifo(model)
    with time_limit(20):
        (check,) = verify(results_file(tmp_path, [record]))
    assert check.status == REFUSED and "not a regular file (a FIFO)" in check.reason


def test_verify_refuses_a_fifo_inside_a_folder_model_without_hanging(tmp_path: Path) -> None:
    folder = tmp_path / "model-hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * 64)
    record = file_record(folder)
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with time_limit(20):
        checks = verify(results_file(tmp_path, [record]))
    by_name = {c.name: c for c in checks}
    assert by_name["model-hf/config.json"].ok
    refused = by_name["model-hf/model.safetensors"]
    assert refused.status == REFUSED and "a FIFO" in refused.reason


def test_verify_never_opens_a_device(tmp_path: Path) -> None:
    """``/dev/zero`` would be hashed forever; a device is refused before it is opened."""
    record = {"path": "/dev/zero", "name": "zero", "kind": "file", "sha256": "0" * 64}
    with time_limit(20):
        (check,) = verify(results_file(tmp_path, [record]))
    assert check.status == REFUSED and "a character device" in check.reason
    with pytest.raises(Refused, match="character device"):
        read_digest(Path("/dev/null"), None)


@pytest.mark.parametrize(
    "rel", ["../secret.txt", "../../secret.txt", "/etc/hostname", "sub/../../secret.txt", ""]
)
def test_verify_refuses_folder_entries_that_leave_the_folder(tmp_path: Path, rel: str) -> None:
    """Old code: ``folder / "../secret.txt"`` was hashed, and an absolute name replaced the
    folder altogether (``folder / "/etc/hostname"`` is ``/etc/hostname``)."""
    folder = tmp_path / "models" / "model-hf"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (tmp_path / "models" / "secret.txt").write_text("secret")
    record = file_record(folder)
    record["files"].append({"path": rel, "sha256": "0" * 64, "size": 6})
    checks = verify(results_file(tmp_path, [record]))
    (hostile,) = [c for c in checks if c.name == f"model-hf/{rel}"]
    assert hostile.status == REFUSED and "not a relative path inside the folder" in hostile.reason
    assert hostile.actual == ""  # nothing was read


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/hostname", "..", "a/b", "x\x00y"])
def test_verify_refuses_recorded_names_that_are_paths(tmp_path: Path, name: str) -> None:
    """Old code: ``--models DIR / "../secret.txt"`` read outside DIR, and ``DIR / "/etc/x"``
    is ``/etc/x``."""
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    record = {"path": f"/elsewhere/{name}", "name": name, "kind": "file", "sha256": "0" * 64}
    (check,) = verify(results_file(tmp_path, [record]), models_dir=models)
    assert check.status == REFUSED and "is not a plain file name" in check.reason


def test_verify_refuses_symlinks_out_of_models(tmp_path: Path) -> None:
    """Old code followed a symlink under ``--models`` anywhere (here: a file beside it)."""
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"secret")
    record = file_record(secret)
    (models / "secret.gguf").symlink_to(secret)
    (check,) = verify(results_file(tmp_path, [record]), models_dir=models)
    assert check.status == REFUSED and "leads outside --models" in check.reason
    # a symlink that stays inside --models is followed (Hugging Face caches are made of them)
    (models / "secret.gguf").unlink()
    shutil.copyfile(secret, models / "sub" / "blob")
    (models / "secret.gguf").symlink_to(models / "sub" / "blob")
    (check,) = verify(results_file(tmp_path, [record]), models_dir=models)
    assert check.ok, check


def test_verify_takes_a_recorded_name_literally(tmp_path: Path) -> None:
    """A name of ``*`` matched every file under ``--models`` (it was a glob pattern)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_bytes(b"a")
    record = {"path": "/x/*", "name": "*", "kind": "file", "sha256": "0" * 64}
    (check,) = verify(results_file(tmp_path, [record]), models_dir=models)
    assert check.status == "missing" and check.actual == ""


def test_verify_prints_hostile_names_harmlessly(qgate: Any, tmp_path: Path) -> None:
    name = "m\x1b[2J\x1b]0;title\x07\nok        forged.gguf"
    record = {"path": f"/nowhere/{name}", "name": name, "kind": "file", "sha256": "\x1b[31m" * 8}
    result = qgate("verify", results_file(tmp_path, [record]), "-q")
    assert result.code == 1
    assert "\x1b" not in result.out
    assert not any(line.startswith("ok") for line in result.out.splitlines()), result.out


def test_verify_fifo_through_the_cli(qgate: Any, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    results = results_file(tmp_path, [file_record(model)])
    model.unlink()
    os.mkfifo(model)
    with time_limit(20):
        result = qgate("verify", results, "-q")
    assert result.code == 1, result
    assert re.search(r"^refused\s+model\.gguf  not a regular file \(a FIFO\)", result.out, re.M)
    assert "0 ok, 1 refused" in result.out


# --------------------------------------------------------------------------------------------
# class 9: GGUF headers with a name twice, and tensors with no values


def tiny_gguf(path: Path) -> Path:
    from tests.tiny_gguf import write_tiny_llama

    return write_tiny_llama(path, n_embd=32, n_layers=1, n_ff=64, n_head=2)


def rename_bytes(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the length-prefixed GGUF string ``old`` renamed to ``new`` (same length),
    so every offset stays valid."""
    assert len(old) == len(new)
    prefixed = struct.pack("<Q", len(old)) + old
    assert data.count(prefixed) == 1, old
    return data.replace(prefixed, struct.pack("<Q", len(new)) + new)


@needs_gguf
def test_duplicate_tensor_names_in_a_gguf_header_are_refused(tmp_path: Path) -> None:
    """Old code: the header reader accepted two ``blk.0.attn_k.weight`` tensors (inspect and
    the metadata checks passed); only the weight reader refused the file."""
    from qgate_gguf.reader import read_gguf_header

    data = tiny_gguf(tmp_path / "clean.gguf").read_bytes()
    dup = tmp_path / "dup.gguf"
    dup.write_bytes(rename_bytes(data, b"blk.0.attn_q.weight", b"blk.0.attn_k.weight"))
    with pytest.raises(BackendError) as exc:
        read_gguf_header(dup)
    assert "corrupt GGUF header: tensor 'blk.0.attn_k.weight' appears twice (#" in str(exc.value)


@needs_gguf
def test_duplicate_metadata_keys_in_a_gguf_header_are_refused(tmp_path: Path) -> None:
    """Old code: the second ``general.file_type`` silently replaced the first."""
    from qgate_gguf.reader import read_gguf_header

    data = tiny_gguf(tmp_path / "clean.gguf").read_bytes()
    dup = tmp_path / "dup-key.gguf"
    dup.write_bytes(rename_bytes(data, b"llama.block_count", b"general.file_type"))
    with pytest.raises(BackendError, match=r"metadata key 'general\.file_type' appears twice"):
        read_gguf_header(dup)


@needs_gguf
def test_duplicate_tensor_names_through_the_cli(qgate: Any, tmp_path: Path) -> None:
    data = tiny_gguf(tmp_path / "clean.gguf").read_bytes()
    dup = tmp_path / "dup.gguf"
    dup.write_bytes(rename_bytes(data, b"blk.0.attn_q.weight", b"blk.0.attn_k.weight"))
    result = qgate("inspect", dup)
    assert result.code != 0 and "appears twice" in result.err, result
    assert "Traceback" not in result.err


def gguf_with_tensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("zero")
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@needs_gguf
@pytest.mark.parametrize("numpy_shape", [(16, 0), (0, 16), (0,)], ids=["rows", "cols", "vector"])
def test_a_zero_sized_tensor_does_not_crash_inspect_identity(
    qgate: Any, tmp_path: Path, numpy_shape: tuple[int, ...]
) -> None:
    """Old code: ZeroDivisionError in ``row_count`` (exit 3) for a zero first dimension."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((8, 32)).astype(np.float32)
    empty = np.zeros(numpy_shape, np.float32)
    a = gguf_with_tensors(tmp_path / "a.gguf", {"w.weight": matrix, "z.weight": empty})
    b = gguf_with_tensors(tmp_path / "b.gguf", {"w.weight": matrix, "z.weight": empty})
    result = qgate("inspect", a, "--identity", b, "--json")
    assert result.code == 0, result
    weights = json.loads(result.out)["weights"]
    assert weights["tensors"] == 2
    assert weights["matrices"] == 1  # the empty tensor has no vote
    assert weights["values_compared"] == matrix.size


@needs_gguf
def test_tensors_without_values_are_no_evidence(qgate: Any, tmp_path: Path) -> None:
    """Files whose every tensor is empty compared 0 values yet were 'consistent with one being
    a quant of the other' (100 % of matrices matched, of nothing)."""
    empty = {"z.weight": np.zeros((16, 0), np.float32), "y.weight": np.zeros(0, np.float32)}
    a = gguf_with_tensors(tmp_path / "a.gguf", empty)
    b = gguf_with_tensors(tmp_path / "b.gguf", empty)
    result = qgate("inspect", a, "--identity", b)
    assert result.code == 0, result
    assert "no tensor holds any values" in result.out
    assert "consistent with" not in result.out
    data = json.loads(qgate("inspect", a, "--identity", b, "--json").out)["weights"]
    assert data["match_share"] is None and data["median_cosine"] is None


@needs_gguf
def test_the_identity_check_is_not_decided_by_empty_tensors(tmp_path: Path) -> None:
    from qgate_checks.identity import WeightEvidence
    from qgate_checks.identity.gathering import weights_decisive
    from qgate_gguf.weights import compare_files

    empty = {"z.weight": np.zeros((16, 0), np.float32)}
    paths = [gguf_with_tensors(tmp_path / f"{n}.gguf", empty) for n in "ab"]
    evidence = WeightEvidence(compare_files(paths), 0.0, 0.9, 0.0)
    assert not evidence.matrices.any()
    assert np.isnan(evidence.match_share())
    decisive = weights_decisive(_Evidence(evidence), [])
    assert decisive == "no tensor of the files holds any values"


class _Evidence:
    """The part of :class:`qgate_checks.identity.Evidence` that ``weights_decisive`` reads."""

    def __init__(self, weights: Any):
        self.weights = weights
        self.weights_note = ""
