"""Every bad input qgate has been tried on: what it says and the exit code it gives.

The cases live in one list, :data:`CASES`. ``docs/bad-inputs.md`` has one table row per case id,
and a test here keeps the table and the list in step (id, exit code and message). Each case is
also run for real through the ``qgate`` entry point. To print fresh table rows after a change::

    python -m tests.test_bad_inputs
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qgate.cli import main
from qgate.plugins import Registry
from qgate.testing import write_fake_model
from tests.conftest import HAVE_GGUF, HAVE_LLAMA_CPP

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"

#: a policy that measures (so a broken model has to produce numbers), kept small for speed
MEASURING_POLICY = """\
name: bad-inputs
backend: {n_ctx: 128, threads: 1}
evaluation: {chunks: 2, top_k: 8, tail_samples: 8, bootstrap: 100}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05}
"""

#: a policy that only reads metadata: enough for the header cases, which fail before scoring
STATIC_POLICY = """\
name: static
checks:
  - use: quant-floor
    options: {min_bits_per_weight: 2.0}
"""


class Workshop:
    """Builds the inputs of the cases in one directory, each file once."""

    def __init__(self, root: Path):
        self.root = root
        self._clean: Path | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return path

    def policy(self, text: str = STATIC_POLICY, name: str = "policy.yaml") -> Path:
        return self.write(name, text)

    def fake(self, name: str, **knobs: object) -> Path:
        return write_fake_model(self.root / f"{name}.fake.json", **knobs)

    def clean_gguf(self) -> Path:
        """A tiny, healthy F32 llama (5.8 MB)."""
        if self._clean is None:
            from tests.tiny_gguf import write_tiny_llama

            self._clean = write_tiny_llama(self.root / "clean.gguf")
        return self._clean

    def gguf_bytes(self) -> bytes:
        return self.clean_gguf().read_bytes()

    def poisoned_gguf(self, name: str, value: float) -> Path:
        """The clean model with the first half of ``output.weight`` set to ``value``."""
        from qgate_gguf.reader import read_gguf_header

        path = self.path(name)
        shutil.copyfile(self.clean_gguf(), path)
        header = read_gguf_header(path)
        tensor = next(t for t in header.tensors if t.name == "output.weight")
        assert tensor.type_name == "F32"
        with path.open("r+b") as handle:
            handle.seek(tensor.offset)
            handle.write(np.full(tensor.n_elements // 2, value, dtype=np.float32).tobytes())
        return path


@dataclass(frozen=True)
class Case:
    #: the row's id in docs/bad-inputs.md
    id: str
    #: the qgate command line, built from the workshop
    args: Callable[[Workshop], list[str | Path]]
    exit_code: int
    #: a fragment of what qgate says: its error line, or an error result's message
    says: str
    #: needs llama-cpp-python and gguf (the case writes or loads a real GGUF)
    gguf: bool = False
    #: needs this backend to be installed
    backend: str | None = None


def _check(*args: str | Path) -> list[str | Path]:
    return ["check", *args, "-q"]


def _gguf_header_case(ws: Workshop, name: str, data: bytes) -> list[str | Path]:
    return _check(ws.write(name, data), "--policy", ws.policy())


def _patch_u64(ws: Workshop, key: bytes, skip: int, value: int) -> bytes:
    """The clean GGUF with the u64 ``skip`` bytes after metadata key ``key`` set to ``value``
    (a string value's length after its u32 type; an array's count after two u32 types)."""
    data = bytearray(ws.gguf_bytes())
    at = data.index(key) + len(key) + skip
    data[at : at + 8] = struct.pack("<Q", value)
    return bytes(data)


def _alias_bomb() -> str:
    """ "Billion laughs": nine levels, each naming the one before ten times (10^9 values)."""
    lines = ["when:", "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _circular(ws: Workshop) -> list[str | Path]:
    ws.write("loop-a.yaml", "extends: loop-b.yaml\n")
    ws.write("loop-b.yaml", "extends: loop-a.yaml\n")
    return _check(ws.fake("sub"), "--policy", ws.path("loop-a.yaml"))


def _exl2_folder(ws: Workshop) -> list[str | Path]:
    folder = ws.path("model-exl2")
    folder.mkdir(exist_ok=True)
    (folder / "output.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (folder / "tokenizer.json").write_text("{}")
    return _check(folder, "--policy", ws.policy())


CASES: list[Case] = [
    Case(
        "missing-file",
        lambda ws: _check(ws.path("nope.gguf"), "--policy", ws.policy()),
        2,
        "model not found",
    ),
    Case(
        "empty-file",
        lambda ws: _check(ws.write("empty.gguf", b""), "--policy", ws.policy()),
        2,
        "no installed backend recognises this file",
    ),
    Case(
        "empty-file-forced-backend",
        lambda ws: _check(
            ws.write("empty.gguf", b""), "--backend", "gguf", "--policy", ws.policy()
        ),
        1,
        "not a GGUF file (0 bytes)",
        gguf=True,
    ),
    Case(
        "not-a-model",
        lambda ws: _check(
            ws.write("notes.txt", "These are my notes, not a model.\n"), "--policy", ws.policy()
        ),
        2,
        "no installed backend recognises this file",
    ),
    Case(
        "bad-magic",
        lambda ws: _check(
            ws.write("magic.gguf", b"GGML" + ws.gguf_bytes()[4:]), "--policy", ws.policy()
        ),
        2,
        "no installed backend recognises this file",
        gguf=True,
    ),
    Case(
        "bad-magic-forced-backend",
        lambda ws: _check(
            ws.write("magic.gguf", b"GGML" + ws.gguf_bytes()[4:]),
            "--backend",
            "gguf",
            "--policy",
            ws.policy(),
        ),
        1,
        "bad magic b'GGML'",
        gguf=True,
    ),
    Case(
        "truncated-tensors",
        lambda ws: _gguf_header_case(ws, "cut.gguf", ws.gguf_bytes()[:-1000]),
        1,
        "truncated: tensor 'output.weight' needs bytes",
        gguf=True,
    ),
    Case(
        "truncated-header",
        lambda ws: _gguf_header_case(ws, "cut-header.gguf", ws.gguf_bytes()[:3000]),
        1,
        "truncated or corrupt GGUF",
        gguf=True,
    ),
    Case(
        "absurd-counts",
        lambda ws: _gguf_header_case(
            ws,
            "counts.gguf",
            ws.gguf_bytes()[:8] + struct.pack("<QQ", 1 << 60, 1 << 60) + ws.gguf_bytes()[24:],
        ),
        1,
        "impossible in a file of",
        gguf=True,
    ),
    Case(
        "huge-key-length",
        lambda ws: _gguf_header_case(
            ws,
            "key-length.gguf",
            ws.gguf_bytes()[:24] + struct.pack("<Q", 1 << 62) + ws.gguf_bytes()[32:],
        ),
        1,
        "metadata key #0 needs 4611686018427387904 bytes",
        gguf=True,
    ),
    Case(
        "huge-value-length",
        lambda ws: _gguf_header_case(
            ws, "value-length.gguf", _patch_u64(ws, b"general.architecture", 4, 1 << 62)
        ),
        1,
        "value of 'general.architecture' needs 4611686018427387904 bytes",
        gguf=True,
    ),
    Case(
        "huge-array-count",
        lambda ws: _gguf_header_case(
            ws, "array-count.gguf", _patch_u64(ws, b"tokenizer.ggml.tokens", 8, 1 << 61)
        ),
        1,
        "array 'tokenizer.ggml.tokens' of 2305843009213693952 items",
        gguf=True,
    ),
    Case(
        "nan-weights",
        lambda ws: _check(
            ws.poisoned_gguf("nan.gguf", float("nan")),
            "--reference",
            ws.clean_gguf(),
            "--policy",
            ws.policy(MEASURING_POLICY, "measure.yaml"),
        ),
        1,
        "non-finite logits",
        gguf=True,
    ),
    Case(
        "inf-weights",
        lambda ws: _check(
            ws.poisoned_gguf("inf.gguf", float("inf")),
            "--reference",
            ws.clean_gguf(),
            "--policy",
            ws.policy(MEASURING_POLICY, "measure.yaml"),
        ),
        1,
        "non-finite logits",
        gguf=True,
    ),
    Case(
        "nan-logits",
        lambda ws: _check(
            ws.fake("broken", nan_after=100),
            "--reference",
            ws.fake("ref"),
            "--policy",
            ws.policy(MEASURING_POLICY, "measure.yaml"),
        ),
        1,
        "non-finite logits",
    ),
    Case("exl2-folder-without-config", _exl2_folder, 2, "no installed backend recognises"),
    Case(
        "exl2-folder-without-config-forced-backend",
        lambda ws: [*_exl2_folder(ws), "--backend", "exl2"],
        1,
        "no config.json",
        backend="exl2",
    ),
    Case(
        "tokenizers-differ",
        lambda ws: _check(
            _bigger_vocab(ws),
            "--reference",
            ws.clean_gguf(),
            "--policy",
            ws.policy(MEASURING_POLICY, "measure.yaml"),
        ),
        1,
        "tokenizers differ",
        gguf=True,
    ),
    Case(
        "policy-wrong-type",
        lambda ws: _check(
            ws.fake("sub"),
            "--policy",
            ws.policy("checks:\n  - use: perplexity\n    options: {max_delta: big}\n"),
        ),
        2,
        "checks[0].options.max_delta: expected a number or null, got string 'big'",
    ),
    Case(
        "policy-unknown-check",
        lambda ws: _check(ws.fake("sub"), "--policy", ws.policy("checks:\n  - use: perplexty\n")),
        2,
        "no check plugin named 'perplexty' (did you mean 'perplexity'?)",
    ),
    Case(
        "policy-unknown-key",
        lambda ws: _check(
            ws.fake("sub"),
            "--policy",
            ws.policy("checks:\n  - use: perplexity\n    options: {max_delt: 0.01}\n"),
        ),
        2,
        "unknown key 'max_delt' (did you mean 'max_delta'?)",
    ),
    Case("policy-circular-extends", _circular, 2, "circular extends"),
    Case(
        "policy-wrong-sign",
        lambda ws: _check(
            ws.fake("sub"),
            "--policy",
            ws.policy("checks:\n  - use: perplexity\n    options: {max_delta: -0.01}\n"),
        ),
        2,
        "checks[0].options.max_delta: must be >= 0, got -0.01",
    ),
    Case(
        "policy-not-utf8",
        lambda ws: _check(
            ws.fake("sub"), "--policy", ws.write("latin1.yaml", "name: café\n".encode("latin-1"))
        ),
        2,
        "policy file is not UTF-8 text",
    ),
    Case(
        "policy-invalid-yaml",
        lambda ws: _check(
            ws.fake("sub"), "--policy", ws.policy("checks: [\n  - use: perplexity\n")
        ),
        2,
        "invalid YAML at line",
    ),
    Case(
        "policy-not-a-mapping",
        lambda ws: _check(ws.fake("sub"), "--policy", ws.policy("- perplexity\n")),
        2,
        "a policy must be a mapping at the top level",
    ),
    Case(
        "policy-nested-too-deep",
        lambda ws: _check(
            ws.fake("sub"), "--policy", ws.policy("checks: " + "[" * 5000 + "]" * 5000)
        ),
        2,
        "invalid YAML: brackets nested 5000 deep (at most 64)",
    ),
    Case(
        "policy-alias-bomb",
        lambda ws: _check(ws.fake("sub"), "--policy", ws.policy(_alias_bomb())),
        2,
        "more than 100000 values once YAML aliases are expanded",
    ),
    Case(
        "dataset-empty",
        lambda ws: _check(
            ws.fake("sub"), "--policy", ws.policy(), "--dataset", ws.write("empty.txt", " \n")
        ),
        2,
        "is empty",
    ),
    Case(
        "dataset-not-utf8",
        lambda ws: _check(
            ws.fake("sub"),
            "--policy",
            ws.policy(),
            "--dataset",
            ws.write("latin1.txt", "Zażółć gęślą jaźń".encode("iso-8859-2")),
        ),
        2,
        "is not UTF-8 text",
    ),
    Case(
        "dataset-jsonl-without-text",
        lambda ws: _check(
            ws.fake("sub"),
            "--policy",
            ws.policy(),
            "--dataset",
            ws.write("rows.jsonl", '{"body": "no text field"}\n'),
        ),
        2,
        "each line must be an object with a string 'text' field",
    ),
    Case(
        "results-not-qgate",
        lambda ws: ["report", ws.write("results.json", '{"schema_version": 99}')],
        2,
        "not a qgate results file",
    ),
]


def _bigger_vocab(ws: Workshop) -> Path:
    from tests.tiny_gguf import write_tiny_llama

    path = ws.path("extra-vocab.gguf")
    if not path.exists():
        write_tiny_llama(path, vocab_extra=8)
    return path


@dataclass
class Outcome:
    code: int
    said: str  #: stderr, then the messages of the error and fail results in the JSON report


def run_case(case: Case, ws: Workshop) -> Outcome:
    """Run one case through the real entry point, in this process."""
    args = [str(a) for a in case.args(ws)]
    out_json = ws.path(f"{case.id}.results.json")
    if args[0] == "check":
        args += ["--json", str(out_json)]
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        pytest.raises(SystemExit) as exc,
    ):
        main(args)
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    said = [err.getvalue().strip()]
    if out_json.exists():
        report = json.loads(out_json.read_text())
        said += [
            r["message"]
            for s in report["subjects"]
            for r in s["results"]
            if r["verdict"] in ("error", "fail")
        ]
    return Outcome(code, "\n".join(s for s in said if s))


def _available(case: Case) -> bool:
    if case.backend is not None and case.backend not in Registry.from_environment().backends:
        return False
    return not case.gguf or (HAVE_GGUF and HAVE_LLAMA_CPP)


@pytest.fixture(scope="module")
def workshop(tmp_path_factory: pytest.TempPathFactory) -> Workshop:
    return Workshop(tmp_path_factory.mktemp("bad-inputs"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, workshop: Workshop) -> None:
    if not _available(case):
        pytest.skip(
            f"needs the {case.backend!r} backend"
            if case.backend
            else "needs llama-cpp-python and gguf: pip install -e '.[dev,gguf]'"
        )
    outcome = run_case(case, workshop)
    assert outcome.code == case.exit_code, outcome
    assert case.says in outcome.said, outcome
    assert "Traceback" not in outcome.said, outcome  # a message for people, not a crash


def _rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`([\w-]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_the_table_has_a_row_for_every_case_and_no_other() -> None:
    rows = _rows(DOC.read_text(encoding="utf-8"))
    assert sorted(rows) == sorted(c.id for c in CASES)
    for case in CASES:
        cells = rows[case.id]
        assert cells[-1].strip("* ") == str(case.exit_code), (case.id, cells)
        said = " ".join(cells[2:-1]).replace("\\|", "|")
        assert case.says in said, (case.id, case.says, said)


def table_row(case: Case, outcome: Outcome, root: Path) -> str:
    """A docs row: the message with temporary paths cut down to file names, trimmed."""
    lines = [ln for ln in outcome.said.splitlines() if ln.strip()]
    said = next((ln for ln in lines if case.says in ln), lines[0] if lines else "")
    said = said.replace(f"{root}/", "").replace(str(root), "").removeprefix("qgate: error: ")
    if len(said) > 220:
        at = max(0, said.find(case.says) - 60)
        said = ("..." if at else "") + said[at : at + 200] + "..."
    said = said.replace("|", "\\|")
    return f"| `{case.id}` | | {said} | {outcome.code} |"


if __name__ == "__main__":  # print the table rows from a real run
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QGATE_CACHE_DIR"] = str(Path(tmp) / "cache")
        ws = Workshop(Path(tmp))
        for case in CASES:
            if _available(case):
                print(table_row(case, run_case(case, ws), Path(tmp)))
            else:
                print(f"| `{case.id}` | (skipped: needs the gguf extra) | | |", file=sys.stderr)
