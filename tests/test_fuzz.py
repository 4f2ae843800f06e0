"""Fuzzing the two parsers of untrusted input: policy files and GGUF headers.

The property: for any input, the parser either succeeds or raises one of qgate's own errors
(a message for people, exit 2 or an ``error`` result), never another exception, and never takes
long (each example runs under a 2-second wall-clock deadline). A policy that loads must also be
printable (``qgate policy show --json``) and hashable (provenance), since every run does both.

Bounded so it runs in CI: 200 examples per property, derandomized (the same examples every run,
so a red build is never luck). ``QGATE_FUZZ_EXAMPLES=5000`` runs a longer, random search.

Crashes the fuzzer found are kept below as explicit regression tests.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qgate.backend import BackendOptions
from qgate.deadline import deadline
from qgate.errors import BackendError, PolicyError, QgateError
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.policy.model import CheckSpec, DatasetSpec, EvaluationSettings, PolicyDocument
from qgate.policy.resolved import resolved_policy_data
from qgate.provenance import policy_sha256
from tests.conftest import HAVE_GGUF

EXAMPLES = int(os.environ.get("QGATE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms: hypothesis reports a slow example; the SIGALRM deadline stops a hang
    derandomize="QGATE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
SECONDS = 2.0


class Hang(Exception):
    """An example ran past its wall-clock bound: a hang, for the fuzzer's purposes."""


REGISTRY = Registry.from_environment()
CHECKS = REGISTRY.check_objects()
WORKDIR = Path(tempfile.mkdtemp(prefix="qgate-fuzz-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# policies

KNOWN_KEYS = sorted(
    {
        f.name
        for schema in (PolicyDocument, CheckSpec, BackendOptions, EvaluationSettings, DatasetSpec)
        for f in fields(schema)
    }
    | {f.name for check in CHECKS.values() for f in fields(check.Options)}
)
WORDS = [
    *sorted(CHECKS),
    "production",
    "permissive",
    "fuzz.yaml",
    "./fuzz.yaml",
    "en",
    "code",
    "ja",
    "q8_0",
    "f16",
    "fail",
    "warn",
    "pass",
    "< 4.5",
    ">= 8192",
    "> x",
    "== nan",
    "~nosuchuser/p.yaml",
    "a" * 300,
    "dir/" + "b" * 300 + ".yaml",
    "x\x00y",
    "/",
    "",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers(-3, 3))


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5)


values = st.recursive(scalars, _nested, max_leaves=24)
documents = st.dictionaries(keys, values, max_size=8)

#: pieces of YAML syntax, for documents that are not always valid YAML
YAML_TOKENS = [
    "checks:",
    "\n  - use: perplexity",
    "\n    options: {max_delta: ",
    "}",
    "{",
    "[",
    "]",
    ", ",
    ": ",
    "\n",
    "  ",
    "- ",
    "&a ",
    "*a",
    "*b",
    "!!python/object:os.system ",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "? ",
    "<<: *a",
    "extends: ",
    "fuzz.yaml",
    "production",
    "backend: ",
    "n_ctx: ",
    "when: ",
    "datasets: ",
    "0x1F",
    "1e400",
    "-.inf",
    ".nan",
    "~",
    "yes",
    "2024-01-01",
    "'",
    '"',
    "|",
    ">",
    "#",
    "%YAML 1.1\n---\n",
    "\t",
    "\ufeff",
    "\x00",
    "9" * 5000,
    "[" * 2000,
]
yaml_texts = st.one_of(
    st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join),
    st.text(max_size=300),
)

VALID_POLICY = {
    "name": "fuzzed",
    "extends": "permissive",
    "on_inconclusive": "warn",
    "backend": {"n_ctx": 256, "threads": 2, "kv_cache": "f16"},
    "evaluation": {"chunks": 2, "top_k": 16, "bootstrap": 200},
    "datasets": ["en", {"name": "code", "chunks": 1}],
    "checks": [
        {"use": "perplexity", "options": {"max_delta": 0.05, "per_domain": True}},
        {"use": "kl-divergence", "timeout": 60, "options": {"max_mean": 0.05}},
        {
            "use": "quant-floor",
            "id": "moe-floor",
            "when": {"expert_count": "> 0", "architecture": ["llama", "qwen2moe"]},
            "options": {"min_bits_per_weight": 5},
        },
        {"use": "repetition", "severity": "warn", "options": {"max_tokens": 32}},
    ],
}


def _containers(node: Any) -> Iterator[dict[Any, Any] | list[Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        yield node
        for value in node:
            yield from _containers(value)


@st.composite
def mutated_policies(draw: st.DrawFn) -> dict[str, Any]:
    """The valid policy with 1 to 4 random edits: replace, delete or add a value anywhere."""
    doc = json.loads(json.dumps(VALID_POLICY))
    for _ in range(draw(st.integers(1, 4))):
        container = draw(st.sampled_from(list(_containers(doc))))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if isinstance(container, dict):
            if op == "add" or not container:
                container[draw(keys)] = draw(values)
                continue
            key = draw(st.sampled_from(list(container)))
            if op == "delete":
                del container[key]
            else:
                container[key] = draw(values)
        else:
            if op == "add" or not container:
                container.insert(draw(st.integers(0, len(container))), draw(values))
                continue
            index = draw(st.integers(0, len(container) - 1))
            if op == "delete":
                del container[index]
            else:
                container[index] = draw(values)
    return doc


def load_or_qgate_error(text: str | bytes) -> None:
    """Load ``text`` as a policy file: it loads (and can be shown and hashed) or a
    :class:`QgateError` says why. Anything else, or taking too long, fails the test."""
    path = WORKDIR / "fuzz.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    try:
        with deadline(SECONDS, lambda: Hang(f"loading the policy took over {SECONDS}s")):
            policy = load_policy(str(path), CHECKS)
            json.dumps(resolved_policy_data(policy))  # qgate policy show --json
            yaml.safe_dump(resolved_policy_data(policy))  # qgate policy show
            policy_sha256(policy)  # every run's provenance
    except QgateError:
        pass


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@FUZZ
@given(documents)
def test_random_policy_documents(doc: dict[Any, Any]) -> None:
    load_or_qgate_error(_dump(doc))


@FUZZ
@given(yaml_texts)
@example("[" * 2000 + "]" * 2000)  # regression: nesting deeper than PyYAML's recursion
@example("max_delta: " + "9" * 5000)  # regression: an integer too long for int()
@example("name: 2024-01-01\n")
@example("!!timestamp ")
def test_random_yaml_text(text: str) -> None:
    load_or_qgate_error(text)


@FUZZ
@given(mutated_policies())
def test_mutations_of_a_valid_policy(doc: dict[str, Any]) -> None:
    load_or_qgate_error(_dump(doc))


@FUZZ
@given(st.data())
def test_byte_mutations_of_a_valid_policy_file(data: st.DataObject) -> None:
    raw = bytearray(_dump(VALID_POLICY).encode())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del raw[at : at + data.draw(st.integers(1, 16))]
        elif op == "truncate":
            del raw[at:]
    load_or_qgate_error(bytes(raw))


def test_the_valid_policy_is_valid() -> None:
    """The mutation base must load, or the mutations only ever test one error."""
    path = WORKDIR / "valid.yaml"
    path.write_text(_dump(VALID_POLICY))
    policy = load_policy(str(path), CHECKS)
    assert {"perplexity", "kl-divergence", "moe-floor", "repetition"} <= {
        c.key for c in policy.checks
    }


def _laughs(levels: int) -> str:
    """A "billion laughs" mapping: each level lists the previous one ten times, by alias."""
    lines = ["      architecture: &a0 [x, x, x, x, x, x, x, x, x, x]\n"]
    for i in range(1, levels):
        lines.append(f"      k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n")
    return "".join(lines)


# Regressions the fuzzer found (each crashed with a non-qgate exception before the fix).
POLICY_REGRESSIONS: dict[str, str] = {
    "deep-nesting": "checks: " + "[" * 5000 + "]" * 5000,
    "long-integer": "backend: {n_ctx: " + "9" * 5000 + "}\n",
    "integer-too-big-for-float": "checks:\n  - use: perplexity\n    options: {max_delta: "
    + "9" * 400
    + "}\n",
    "integer-too-big-for-bounds": "evaluation: {seed: -" + "9" * 400 + "}\n",
    "non-string-condition-field": "checks:\n  - use: quant-floor\n    when: {1: 2}\n",
    "date-in-a-condition": "checks:\n  - use: quant-floor\n    when: {architecture: 2024-01-01}\n",
    "binary-in-a-condition": "checks:\n  - use: quant-floor\n    when: {architecture: !!binary aGk=}\n",
    "set-in-a-condition": "checks:\n  - use: quant-floor\n    when: {architecture: !!set {a: null}}\n",
    "extends-unknown-user-home": "extends: ~nosuchuser/p.yaml\n",
    "extends-name-too-long": "extends: " + "a" * 300 + ".yaml\n",
    "dataset-path-too-long": "datasets: [{path: " + "b" * 300 + ".txt}]\n",
    "unsafe-tag": "name: !!python/object/apply:os.system ['true']\n",
    "explicit-tag-without-value": "name: !!timestamp\n",
    "alias-cycle": "checks:\n  - use: quant-floor\n    when: &a {architecture: [*a]}\n",
    "billion-laughs": "checks:\n  - use: quant-floor\n    when:\n" + _laughs(9),
    # loaded without complaint before: the second checks: silently replaced the first
    "duplicate-key": "checks:\n  - use: perplexity\nname: x\nchecks:\n  - use: quant-floor\n",
    "duplicate-nested-key": "checks:\n  - use: quant-floor\n    use: perplexity\n",
}


@pytest.mark.parametrize("name", sorted(POLICY_REGRESSIONS))
def test_policy_regressions(name: str) -> None:
    """Each gives a PolicyError (exit 2) at once."""
    path = WORKDIR / f"{name}.yaml"
    path.write_text(POLICY_REGRESSIONS[name])
    with (
        deadline(SECONDS, lambda: Hang(f"loading the policy took over {SECONDS}s")),
        pytest.raises(PolicyError),
    ):
        load_policy(str(path), CHECKS)


@pytest.mark.parametrize("name", ["p" * 300, "~nosuchuser/policy.yaml", "x\x00y.yaml"])
def test_a_hostile_policy_argument_is_a_policy_error(name: str) -> None:
    with pytest.raises(PolicyError):
        load_policy(name, CHECKS)


# --------------------------------------------------------------------------------------------
# GGUF headers

needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="needs gguf: pip install -e '.[dev,gguf]'")


def _small_gguf() -> bytes:
    from tests.tiny_gguf import write_tiny_llama

    path = WORKDIR / "small.gguf"
    if not path.exists():
        write_tiny_llama(path, n_embd=32, n_layers=1, n_ff=64, n_head=2, chat_template="{{ x }}")
    return path.read_bytes()


_GGUF: list[bytes] = []


def small_gguf() -> bytes:
    if not _GGUF:
        _GGUF.append(_small_gguf())
    return _GGUF[0]


def _header_end() -> int:
    from qgate_gguf.reader import read_gguf_header

    return read_gguf_header(WORKDIR / "small.gguf").data_offset


def read_or_backend_error(data: bytes) -> None:
    """Read a GGUF header and its metadata: they succeed, or a :class:`BackendError` says why."""
    from qgate_gguf.metadata import read_metadata
    from qgate_gguf.reader import read_gguf_header

    path = WORKDIR / "mutant.gguf"
    path.write_bytes(data)
    for read in (read_gguf_header, read_metadata):
        try:
            with deadline(SECONDS, lambda: Hang(f"reading the header took over {SECONDS}s")):
                read(path)
        except BackendError:
            pass


INTERESTING_U64 = [0, 1, 2, 3, 4, 6, 8, 9, 12, 13, 31, 32, 255, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


@st.composite
def gguf_mutants(draw: st.DrawFn) -> bytes:
    """A real tiny GGUF with 1 to 6 edits, most of them in the header (the part that is parsed)."""
    raw = bytearray(small_gguf())
    header_end = _header_end()
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, header_end + 64) | st.integers(0, len(raw)))
        op = draw(st.sampled_from(["byte", "u32", "u64", "float", "insert", "delete", "truncate"]))
        if op == "byte":
            raw[at : at + 1] = bytes([draw(st.integers(0, 255))])
        elif op == "u32":
            raw[at : at + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING_U64)) % 2**32)
        elif op == "u64":
            raw[at : at + 8] = struct.pack("<Q", draw(st.sampled_from(INTERESTING_U64)))
        elif op == "float":
            raw[at : at + 4] = struct.pack("<f", draw(st.floats(width=32)))
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 64))]
        else:
            del raw[at:]
    return bytes(raw)


@needs_gguf
@FUZZ
@given(gguf_mutants())
def test_gguf_header_mutations(data: bytes) -> None:
    read_or_backend_error(data)


@needs_gguf
@FUZZ
@given(st.data())
def test_gguf_truncations(data: st.DataObject) -> None:
    raw = small_gguf()
    read_or_backend_error(raw[: data.draw(st.integers(0, len(raw)))])


def _retyped(key: bytes, type_id: int, value: bytes) -> Callable[[bytes], bytes]:
    """Change the value type of the 4-byte metadata ``key`` and write ``value`` in its place."""

    def patch(raw: bytes) -> bytes:
        data = bytearray(raw)
        at = data.index(key) + len(key)
        data[at : at + 4] = struct.pack("<I", type_id)
        data[at + 4 : at + 4 + len(value)] = value
        return bytes(data)

    return patch


# Regressions the fuzzer found.
GGUF_REGRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "file-type-infinite-float": _retyped(b"general.file_type", 6, struct.pack("<f", float("inf"))),
    "file-type-nan-float": _retyped(b"general.file_type", 6, struct.pack("<f", float("nan"))),
    "context-length-infinite-float": _retyped(
        b"llama.context_length", 6, struct.pack("<f", float("inf"))
    ),
}


@needs_gguf
@pytest.mark.parametrize("name", sorted(GGUF_REGRESSIONS))
def test_gguf_regressions(name: str) -> None:
    read_or_backend_error(GGUF_REGRESSIONS[name](small_gguf()))


# --------------------------------------------------------------------------------------------
# results files through every reporter

#: what a hostile model, plugin or results file puts in a string: lone surrogates (what a
#: ``"\ud800"`` JSON escape decodes to), NUL and other controls, terminal escapes, bidi
#: overrides, XML non-characters, and markup of every format a reporter writes
HOSTILE_PIECES = [
    "\ud800",
    "\udfff",
    "\ud83d",
    "\x00",
    "\x07",
    "\x1b[2J",
    "\x1b]0;title\x07",
    "\x9b31m",
    "\u202e",
    "\ufffe",
    "\uffff",
    "\r\n",
    "<script>x</script>",
    "]]>",
    "&amp;",
    "|",
    "[a](https://e)",
    "`",
    '"',
    "日本",
]
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=6)), max_size=6
).map("".join)
hostile_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def hostile_results(draw: st.DrawFn) -> dict[str, Any]:
    """A results file (``RunReport.to_dict()``) with hostile text in every free-form field."""
    from qgate.results import CheckResult, RunReport, SubjectReport, Verdict

    def text() -> str:  # a fresh draw per field
        return draw(hostile_text)

    results = [
        CheckResult(
            check=text(),
            check_id=text(),
            metric=text(),
            verdict=draw(st.sampled_from([Verdict.ERROR, Verdict.SKIP])),  # no numbers to judge
            message=text(),
            unit=text(),
            details={
                text(): draw(hostile_values),
                "tables": [{"title": text(), "columns": [text()], "rows": [[text(), text()]]}],
                "samples": [{"prompt": text(), "subject": text(), "reference": text()}],
                "traceback": text(),
            },
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    info = {"label": text(), "architecture": text(), "identity": {text(): text()}, text(): text()}
    subject = SubjectReport(path=text(), backend=text(), info=info, results=results)
    report = RunReport(
        policy=text(),
        subjects=[subject],
        qgate_version=text(),
        counters={text(): draw(st.integers(0, 9))},
        environment={text(): text()},
    )
    return report.to_dict()


@FUZZ
@given(hostile_results())
def test_every_reporter_writes_any_results_file(data: dict[str, Any]) -> None:
    """As ``qgate report`` reads it (strict JSON with ASCII escapes, surrogates kept), every
    reporter writes a strict UTF-8 file; the JSON and JUnit outputs still parse."""
    import xml.etree.ElementTree as ET

    from qgate.results import RunReport
    from qgate_reporters import console, html, json_report, junit, markdown

    report = RunReport.from_dict(json.loads(json.dumps(data)))
    with deadline(SECONDS * 5, lambda: Hang("rendering took too long")):
        for reporter in (
            json_report.JsonReporter(),
            junit.JUnitReporter(),
            html.HtmlReporter(),
            markdown.MarkdownReporter(),
        ):
            target = WORKDIR / f"report.{reporter.name}"
            reporter.write(report, target)
            written = target.read_bytes().decode("utf-8")  # strict
            if reporter.name == "json":
                json.loads(written)
            elif reporter.name == "junit":
                ET.fromstring(written.encode("utf-8"))
        shown = console.ConsoleReporter().render(report)
    shown.encode("utf-8")
    assert "\x1b" not in shown


# --------------------------------------------------------------------------------------------
# Hugging Face config.json (the hf, awq and exl2 backends read it through one reader)

needs_safetensors = pytest.mark.skipif(
    importlib.util.find_spec("safetensors") is None, reason="needs safetensors"
)
CONFIG_KEYS = ["vocab_size", "max_position_embeddings", "num_local_experts", "num_experts"]
#: what a hostile config puts where qgate expects a count: mostly numbers, of any size
config_numbers = st.one_of(
    st.floats(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    values,
)


def _hf_folder() -> Path:
    folder = WORKDIR / "hf-model"
    if not folder.exists():
        import numpy as np
        from safetensors.numpy import save_file

        folder.mkdir()
        save_file({"w": np.ones((4, 4), np.float16)}, str(folder / "model.safetensors"))
    return folder


@st.composite
def hostile_configs(draw: st.DrawFn) -> dict[str, Any]:
    keys = st.lists(st.sampled_from(CONFIG_KEYS), min_size=1, unique=True)
    config: dict[str, Any] = {key: draw(config_numbers) for key in draw(keys)}
    if draw(st.booleans()):
        config["text_config"] = {key: draw(config_numbers) for key in draw(keys)}
    if draw(st.booleans()):
        method = draw(st.sampled_from(["awq", "exl2", None]))
        config["quantization_config"] = {
            "quant_method": method,
            "bits": draw(config_numbers),
            "group_size": draw(config_numbers),
        }
    return config


@needs_safetensors
@FUZZ
@given(hostile_configs())
@example({"vocab_size": float("inf")})  # regression: OverflowError from int()
@example({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": float("inf")}})
def test_hostile_config_values(config: dict[str, Any]) -> None:
    """Any value under the keys qgate reads: inspect succeeds, or a BackendError says why."""
    from qgate_awq import AWQBackend
    from qgate_exl2 import EXL2Backend
    from qgate_hf import HFBackend

    folder = _hf_folder()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for backend in (HFBackend(), AWQBackend(), EXL2Backend()):
        try:
            with deadline(SECONDS, lambda: Hang(f"inspect took over {SECONDS}s")):
                backend.detect(folder)  # never raises
                backend.inspect(folder)
        except BackendError:
            pass
