"""Which backend opens a model: the highest ``detect()`` confidence wins, a tie is an error.

The selection is one function (:func:`qgate.detection.resolve_backend`) used by the runner (and
so by ``qgate check`` and ``qgate baseline``); these tests register extra backends next to the
built-in ones, as a third party's would be.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgate.backend import Backend
from qgate.detection import confidence, resolve_backend
from qgate.errors import UsageError
from qgate.hookspecs import hookimpl
from qgate.plugins import Registry, make_plugin_manager
from qgate.testing import FakeBackend, write_fake_model


class TwinFake(FakeBackend):
    """A second backend that claims fake models exactly as surely as the built-in one."""

    name = "fake-twin"


class UnsureFake(FakeBackend):
    """Claims fake models, but less surely than the built-in backend."""

    name = "fake-unsure"

    def detect(self, path: Path) -> float:
        return 0.5 * super().detect(path)


class CrashingBackend(FakeBackend):
    """A backend whose detect() crashes on every file."""

    name = "crashing"

    def detect(self, path: Path) -> float:
        raise RuntimeError("detect crashed")


class BoolBackend(FakeBackend):
    """An older backend whose detect() still answers True or False."""

    name = "boolean"

    def detect(self, path: Path) -> bool:  # type: ignore[override]
        return path.suffix == ".bool"


class Registers:
    """A plugin object registering the given backends."""

    def __init__(self, *backends: Backend):
        self.backends = list(backends)

    @hookimpl
    def qgate_backends(self) -> list[Backend]:
        return self.backends


def registry_with(*backends: Backend) -> Registry:
    return Registry(make_plugin_manager(plugins=[Registers(*backends)]))


def test_two_backends_equally_sure_are_an_error_naming_both(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "m.fake.json")
    registry = registry_with(TwinFake())
    with pytest.raises(UsageError) as error:
        resolve_backend(registry, model)
    message = str(error.value)
    assert "'fake' and 'fake-twin'" in message and "--backend" in message
    assert resolve_backend(registry, model, "fake-twin").name == "fake-twin"  # the way out


def test_the_surest_backend_wins(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "m.fake.json")
    assert resolve_backend(registry_with(UnsureFake()), model).name == "fake"


def test_a_crashing_detect_counts_as_no_claim_and_a_bool_as_one_or_zero(tmp_path: Path) -> None:
    registry = registry_with(CrashingBackend(), BoolBackend())
    assert confidence(CrashingBackend(), tmp_path) == 0.0
    model = write_fake_model(tmp_path / "m.fake.json")
    assert resolve_backend(registry, model).name == "fake"
    other = tmp_path / "notes.bool"
    other.write_text("not a fake model")
    assert confidence(BoolBackend(), other) == 1.0
    assert resolve_backend(registry, other).name == "boolean"


def test_nothing_claims_a_text_file_and_a_missing_path_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    registry = Registry.from_environment()
    with pytest.raises(UsageError, match="no installed backend recognises this file"):
        resolve_backend(registry, text)
    with pytest.raises(UsageError, match="model not found"):
        resolve_backend(registry, tmp_path / "nope.gguf")


def test_the_runner_refuses_a_tie(
    qgate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``qgate check`` goes through the same selection: exit 2, both backends named."""
    module = tmp_path / "qgate_twin_backend.py"
    module.write_text(
        "from qgate.hookspecs import hookimpl\n"
        "from qgate.testing import FakeBackend\n\n\n"
        "class TwinFake(FakeBackend):\n"
        "    name = 'fake-twin'\n\n\n"
        "@hookimpl\n"
        "def qgate_backends():\n"
        "    return [TwinFake()]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("QGATE_PLUGINS", "qgate_twin_backend")
    subject = write_fake_model(tmp_path / "sub.fake.json")
    result = qgate("check", subject, "--reference", subject, "--policy", "permissive")
    assert result.code == 2, result
    assert "'fake' and 'fake-twin'" in result.err and "--backend" in result.err


# -- Hugging Face-style folders: the marker decides, hf only when there is none -------------

needs_safetensors = pytest.mark.skipif(
    importlib.util.find_spec("safetensors") is None, reason="needs safetensors to write folders"
)


def _folder(path: Path, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"vocab_size": 8, **config}))
    return path


@needs_safetensors
@pytest.mark.parametrize(
    ("config", "packed", "expected"),
    [
        ({}, False, "hf"),
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, True, "awq"),
        ({"quantization_config": {"quant_method": "exl2", "bits": 4.0}}, True, "exl2"),
    ],
    ids=["plain", "awq", "exl2"],
)
def test_folders_go_to_the_backend_of_their_marker(
    tmp_path: Path, config: dict[str, Any], packed: bool, expected: str
) -> None:
    tensors = {"model.embed_tokens.weight": np.ones((8, 4), np.float16)}
    if packed:
        tensors["model.layers.0.mlp.up_proj.qweight"] = np.zeros((4, 4), np.int32)
    folder = _folder(tmp_path / "m", tensors, config)
    registry = Registry.from_environment()
    assert resolve_backend(registry, folder).name == expected
    claims = {name: confidence(p.item, folder) for name, p in registry.backends.items()}
    assert claims["hf"] == (0.5 if expected == "hf" else 0.0)


@needs_safetensors
def test_packed_weights_without_a_marker_are_not_taken_for_hf(tmp_path: Path) -> None:
    """GPTQ-style tensors and no quantization_config: no installed backend's format."""
    tensors = {
        "model.embed_tokens.weight": np.ones((8, 4), np.float16),
        "model.layers.0.mlp.up_proj.qweight": np.zeros((4, 4), np.int32),
    }
    folder = _folder(tmp_path / "m", tensors, {})
    with pytest.raises(UsageError, match="no installed backend recognises"):
        resolve_backend(Registry.from_environment(), folder)
