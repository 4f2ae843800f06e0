"""The parity checks on a real instruction-tuned model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M.

Its broken copies are made as users made them, with ``gguf-new-metadata``: the pre-tokenizer
``default`` (llama.cpp 7724), the EOS id 0 (unsloth 468), the chat template removed, the RoPE
base dropped (llama.cpp 8330). Each keeps the weights bit for bit; the parity checks must name
what is wrong and pass the clean file. The
whole of production on the same copies, with the time it takes, is benchmarks/parity_cases.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qgate.backend import BackendOptions
from qgate.results import CheckResult, RunReport, Verdict
from qgate.token_diff import PROBE_TEXTS

pytestmark = pytest.mark.qwen

#: the GGUF key of the RoPE base; Qwen2.5 stores 1,000,000
ROPE_BASE_KEY = "qwen2.rope.freq_base"

#: the parity checks that need no scoring pass, on production's settings otherwise
POLICY = """
backend: {n_ctx: 512, kv_cache: f16}
checks:
  - use: tokenizer-parity
  - use: special-tokens
  - use: chat-template
  - use: config-parity
"""


def new_metadata(source: Path, target: Path, *arguments: str) -> Path:
    script = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force"]
    subprocess.run([*script, *arguments, str(source), str(target)], check=True, capture_output=True)
    return target


def run(
    qgate: Any, tmp_path: Path, subjects: list[Path], reference: Path
) -> dict[str, dict[str, CheckResult]]:
    policy = tmp_path / "parity.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "r.json"
    result = qgate(
        "check", *subjects, "--reference", reference, "--policy", policy, "--json", out, "-q"
    )
    assert result.code in (0, 1), result
    report = RunReport.from_dict(json.loads(out.read_text()))
    return {Path(s.path).name: {r.name: r for r in s.results} for s in report.subjects}


def test_broken_copies_of_qwen_fail_by_name_and_the_clean_file_passes(
    qgate, tmp_path, qwen_gguf
) -> None:
    clean = tmp_path / "clean.gguf"
    clean.hardlink_to(qwen_gguf)
    pre = new_metadata(qwen_gguf, tmp_path / "pre.gguf", "--pre-tokenizer", "default")
    eos = new_metadata(qwen_gguf, tmp_path / "eos.gguf", "--special-token-by-id", "eos", "0")
    rope = new_metadata(qwen_gguf, tmp_path / "rope.gguf", "--remove-metadata", ROPE_BASE_KEY)
    results = run(qgate, tmp_path, [clean, pre, eos, rope], qwen_gguf)

    ok = results["clean.gguf"]
    assert not {n: r.message for n, r in ok.items() if r.verdict.is_blocking}
    stopping = ok["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.PASS and stopping.details["runaway"] == []

    probe = results["pre.gguf"]["tokenizer-parity.probe_mismatches"]
    assert probe.verdict is Verdict.FAIL
    # qwen2's pre-tokenizer splits digit runs into single digits; "default" does not
    assert "digits" in probe.details["mismatches"]
    assert "pre_tokenizer: 'default' vs the reference's 'qwen2'" in probe.message

    special = results["eos.gguf"]["special-tokens.special_token_differences"]
    assert special.verdict is Verdict.FAIL
    assert "EOS token: id 0 '!' vs the reference's id 151645 '<|im_end|>'" in special.message
    # llama.cpp also ends on the tokens it knows by their text (<|im_end|>): in llama.cpp the
    # copy still stops, and only the stored EOS id shows the fault other runtimes run on with
    assert results["eos.gguf"]["special-tokens.stop_rate_drop"].verdict is Verdict.PASS
    stored = results["eos.gguf"]["tokenizer-parity.fingerprint_differences"]
    assert stored.verdict is Verdict.FAIL and "eos token: id 0 '!'" in stored.message

    # a converter that loses the RoPE base leaves a file llama.cpp runs with its default
    config = results["rope.gguf"]["config-parity.config_differences"]
    assert config.verdict is Verdict.FAIL and config.value == 1
    assert (
        "rope_base: 10000 vs the reference's 1e+06 (subject: qwen2.rope.freq_base is absent from "
        "the file: llama.cpp runs with its default 10000)"
    ) in config.message, config.message


def test_a_copy_without_its_chat_template_fails(qgate, tmp_path, qwen_gguf) -> None:
    bare = new_metadata(
        qwen_gguf, tmp_path / "bare.gguf", "--remove-metadata", "tokenizer.chat_template"
    )
    results = run(qgate, tmp_path, [bare], qwen_gguf)["bare.gguf"]
    template = results["chat-template.template_differences"]
    assert template.verdict is Verdict.FAIL and "chat template missing" in template.message
    assert template.value == 4  # every conversation
    # without its template the model gets a plain prompt, and most answers run to the budget
    stopping = results["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.FAIL and "the model has no chat template" in stopping.message


def test_the_hugging_face_tokenizer_of_the_gguf_tokenizes_as_the_gguf(qwen_gguf) -> None:
    """One BOS convention, from the model's own flags: Qwen names ``<|endoftext|>`` as its BOS
    and adds none (``tokenizer.ggml.add_bos_token = false``), and both backends add none."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from qgate_gguf import GGUFBackend
    from qgate_transformers.tokenizer import hf_tokenize, special_affixes

    hf = AutoTokenizer.from_pretrained(str(qwen_gguf.parent), gguf_file=qwen_gguf.name)
    assert hf.bos_token == "<|endoftext|>"
    affixes = special_affixes(hf)
    assert affixes == ([], [])
    gguf = GGUFBackend().load(qwen_gguf, BackendOptions(n_ctx=64))
    try:
        assert gguf.bos_token is None
        for name, text in PROBE_TEXTS.items():
            ours = hf_tokenize(hf, text, add_bos=True, affixes=affixes)
            assert ours == gguf.tokenize(text, add_bos=True), name
    finally:
        gguf.close()
