"""The awq backend on the CPU: a tiny Llama quantized to AWQ W4 g128 by gptqmodel, then gated.

gptqmodel runs AWQ on the CPU through its pure-torch kernels (slowly: seconds for this model).
On a GPU, tests/gpu/run_gpu.sh runs the same path with the Triton kernel (docs/gpu.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from qgate.results import RunReport, Verdict

_MISSING = [
    m
    for m in ("torch", "transformers", "safetensors", "gptqmodel")
    if not importlib.util.find_spec(m)
]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"needs {', '.join(_MISSING)}: pip install --no-deps gptqmodel==7.5.0 and its imports "
    "(see .ci/run)",
)

POLICY = """
name: awq-cpu
backend: {n_ctx: 128}
evaluation: {chunks: 3}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.5, per_domain: false}
  - use: kl-divergence
    options: {max_mean: 0.05}
  - use: quant-floor
    options: {min_bits_per_weight: 4.0}
"""


@pytest.fixture(scope="module")
def awq_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).parent / "gpu"))
    from build_models import quantize_awq
    from test_hf import write_tiny_hf

    root = tmp_path_factory.mktemp("awq")
    # 128 wide: AWQ's groups of 128 input channels need widths that are multiples of 128
    reference = write_tiny_hf(root / "hf", hidden=128)
    # gptqmodel writes its processor logs to ./logs: keep them out of the checkout
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert quantize_awq(reference, root / "awq", rows=8, length=64)
    finally:
        os.chdir(cwd)
    return reference, root / "awq"


def test_awq_quant_is_detected_loaded_and_gated_on_the_cpu(qgate, tmp_path, awq_pair):
    reference, quant = awq_pair
    config = json.loads((quant / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "awq" and config["bits"] == 4
    policy = tmp_path / "awq.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "r.json"
    result = qgate(
        "check", quant, "--reference", reference, "--policy", policy, "--json", out, "-q"
    )
    assert result.code in (0, 1), result
    subject = RunReport.from_dict(json.loads(out.read_text())).subjects[0]
    assert subject.backend == "awq"
    results = {r.name: r for r in subject.results}
    assert all(r.verdict is not Verdict.ERROR for r in results.values()), results
    kld = results["kl-divergence.kld_mean"].value
    # 4-bit weights of a random model with wide weights: measurably not the reference
    assert kld is not None and 0 < kld < float("inf")
    bpw = results["quant-floor.bits_per_weight"].value
    assert bpw is not None and 4.0 < bpw < 16.0
