"""The runtime floor on the fake backend: a second runtime, registered by this module.

``fake-runtime`` runs fake models like the ``fake`` backend, plus a disagreement of its own
(``runtime_noise``, as exllamav2 at FP16 disagrees with transformers): the floor is the
reference's weights run through it. Its own artifacts are fake-model files padded past the
``fake`` backend's 1 MiB detection limit, so each backend claims its own files; it also claims
plain fake files, less surely, because it can run the reference's full-precision weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgate.backend import Backend, BackendOptions
from qgate.hookspecs import hookimpl
from qgate.results import RunReport, Verdict
from qgate.testing import MAGIC_KEY, FakeBackend, FakeModel, read_knobs, write_fake_model

PLUGIN = "tests.test_parity_runtime"
#: the disagreement of the fake runtime with the fake backend, in the fake's noise units (an
#: environment variable: QGATE_PLUGINS imports this file again, as another module object)
RUNTIME_NOISE = "QGATE_TEST_RUNTIME_NOISE"
#: "0": the fake runtime cannot run plain fake models (the reference's weights)
RUNS_FAKE_MODELS = "QGATE_TEST_RUNTIME_RUNS_FAKE_MODELS"


class FakeRuntimeBackend(FakeBackend):
    name = "fake-runtime"
    description = "fake models run by another runtime (tests)"

    def detect(self, path: Path) -> float:
        if not path.is_file():
            return 0.0
        with path.open("rb") as handle:
            marked = MAGIC_KEY.encode() in handle.read(4096)
        if not marked:
            return 0.0
        if path.stat().st_size > 1 << 20:
            return 1.0
        return 0.5 if os.environ.get(RUNS_FAKE_MODELS, "1") == "1" else 0.0

    def load(self, path: Path, options: BackendOptions) -> FakeModel:
        knobs = read_knobs(path)
        knobs["noise"] = float(knobs["noise"]) + float(os.environ.get(RUNTIME_NOISE, "0"))
        return FakeModel(self.inspect(path), knobs, options)


@hookimpl
def qgate_backends() -> list[Backend]:
    return [FakeRuntimeBackend()]


def runtime_model(path: Path, **knobs: Any) -> Path:
    """A fake model that only ``fake-runtime`` claims."""
    write_fake_model(path, **knobs)
    with path.open("a") as handle:
        handle.write(" " * (1 << 20))
    return path


POLICY = """
backend: {n_ctx: 128}
evaluation: {chunks: 2}
datasets: [en]
checks:
  - use: runtime-parity
    options: {floor_chunks: 2, max_floor_kld: 0.02}
"""


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Register the fake runtime; call the fixture's value to set its disagreement."""
    monkeypatch.setenv("QGATE_PLUGINS", PLUGIN)
    monkeypatch.setenv(RUNTIME_NOISE, "0")
    return lambda noise: monkeypatch.setenv(RUNTIME_NOISE, str(noise))


def run(qgate: Any, tmp_path: Path, subject: Path, reference: Path, policy: str = POLICY) -> dict:
    policy_file = tmp_path / "runtime.yaml"
    policy_file.write_text(policy)
    out = tmp_path / "r.json"
    result = qgate(
        "check", subject, "--reference", reference, "--policy", policy_file, "--json", out, "-q"
    )
    assert result.code in (0, 1), result
    report = RunReport.from_dict(json.loads(out.read_text()))
    assert report.subjects[0].info["format"] == "fake"  # the backends' claims held
    return {r.name: r for r in report.subjects[0].results}


def test_a_faithful_runtime_has_a_floor_near_zero_and_the_damage_is_the_quants(
    qgate, fake, tmp_path, runtime
) -> None:
    quant = runtime_model(tmp_path / "quant.json", noise=0.3)
    results = run(qgate, tmp_path, quant, fake("ref"))
    floor = results["runtime-parity.runtime_floor_kld"]
    assert floor.verdict is Verdict.PASS and floor.value == pytest.approx(0.0, abs=1e-6)
    assert "the fake-runtime backend loads the reference itself" in floor.message
    assert floor.details["kld_over_floor"] == pytest.approx(floor.details["subject_kld_mean"])
    assert floor.details["subject_kld_mean"] > 0.01


def test_a_runtime_that_disagrees_at_full_precision_is_an_error_not_the_quants_fault(
    qgate, fake, tmp_path, runtime
) -> None:
    runtime(1.0)
    quant = runtime_model(tmp_path / "quant.json", noise=0.1)
    results = run(qgate, tmp_path, quant, fake("ref"))
    floor = results["runtime-parity.runtime_floor_kld"]
    assert floor.verdict is Verdict.ERROR
    assert floor.message.startswith("the runtime disagrees with the reference at full precision")
    assert "not its quantization's" in floor.message
    assert floor.value is None and floor.details["floor_kld_mean"] > 0.02
    # the subject's damage over the floor is what the quantization added
    assert 0 < floor.details["kld_over_floor"] < floor.details["subject_kld_mean"]


def test_the_floor_model_can_be_given(qgate, fake, tmp_path, runtime) -> None:
    runtime(0.05)
    converted = runtime_model(tmp_path / "converted-f16.json")
    policy = POLICY.replace(
        "options: {", f"options: {{full_precision: {json.dumps(str(converted))}, "
    )
    results = run(
        qgate, tmp_path, runtime_model(tmp_path / "q.json", noise=0.2), fake("ref"), policy
    )
    floor = results["runtime-parity.runtime_floor_kld"]
    assert floor.details["floor_model"] == str(converted)
    assert "options.full_precision" in floor.message
    assert floor.verdict is not Verdict.ERROR
    assert floor.details["floor_kld_mean"] > 0


def test_a_runtime_that_cannot_load_the_reference_says_so(
    qgate, fake, tmp_path, runtime, monkeypatch
) -> None:
    monkeypatch.setenv(RUNS_FAKE_MODELS, "0")
    results = run(qgate, tmp_path, runtime_model(tmp_path / "q.json", noise=0.2), fake("ref"))
    assert "runtime-parity.runtime_floor_kld" not in results
    message = results["runtime-parity.ppl_improvement"].message
    assert "runtime floor not measured" in message and "options.full_precision" in message


def test_the_reference_floor_outputs_are_cached(qgate, fake, tmp_path, runtime) -> None:
    quant = runtime_model(tmp_path / "quant.json", noise=0.3)
    reference = fake("ref")
    first = run(qgate, tmp_path, quant, reference)["runtime-parity.runtime_floor_kld"]
    second = run(qgate, tmp_path, quant, reference)["runtime-parity.runtime_floor_kld"]
    assert second.value == first.value
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["counters"].get("reference_cache_hits", 0) >= 1
