"""The parity checks on the fake backend: each fault is found, named, and a clean subject passes.

Real formats and real models are in test_parity_backends.py and test_parity_real.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qgate.policy import load_policy
from qgate.results import CheckResult, RunReport, SkipCause, Verdict

#: production's parity entries as they ship, on a small scoring budget
PARITY = """
backend: {n_ctx: 128}
evaluation: {chunks: 2}
datasets: [en]
checks:
  - use: tokenizer-parity
  - use: special-tokens
  - use: chat-template
  - use: config-parity
  - use: tensor-integrity
  - use: runtime-parity
"""

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}<assistant>"


def check(
    qgate: Any, tmp_path: Path, subject: Path, reference: Path | None, policy: str = PARITY
) -> dict[str, CheckResult]:
    """Run ``qgate check`` and return the subject's results by name."""
    policy_file = tmp_path / "parity.yaml"
    policy_file.write_text(policy)
    out = tmp_path / "r.json"
    args = ["check", subject, "--policy", policy_file, "--json", out, "-q"]
    if reference is not None:
        args += ["--reference", reference]
    result = qgate(*args)
    assert result.code in (0, 1), result
    report = RunReport.from_dict(json.loads(out.read_text()))
    return {r.name: r for r in report.subjects[0].results}


def test_production_ends_with_the_six_parity_checks() -> None:
    from qgate.plugins import Registry

    policy = load_policy("production", Registry.from_environment().check_objects())
    names = [spec.use for spec in policy.checks]
    assert names[-6:] == [
        "tokenizer-parity",
        "special-tokens",
        "chat-template",
        "config-parity",
        "tensor-integrity",
        "runtime-parity",
    ]
    assert all(spec.severity == "fail" for spec in policy.checks[-6:])


def test_a_clean_subject_passes_every_parity_check(qgate, fake, tmp_path) -> None:
    results = check(qgate, tmp_path, fake("q8", noise=0.1), fake("ref"))
    blocking = {n: r.message for n, r in results.items() if r.verdict.is_blocking}
    assert not blocking
    assert results["tokenizer-parity.probe_mismatches"].value == 0
    assert results["config-parity.config_differences"].verdict is Verdict.PASS
    assert results["tensor-integrity.faulty_tensors"].verdict is Verdict.PASS
    # no template at the reference: nothing to keep, and no chat model to stop
    template = results["chat-template.template_differences"]
    assert template.verdict is Verdict.SKIP and template.skip_cause is SkipCause.NOT_APPLICABLE
    stopping = results["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.SKIP and stopping.skip_cause is SkipCause.NO_SIGNAL


# -- tokenizer-parity ----------------------------------------------------------------------


def test_another_pre_tokenizer_is_named(qgate, fake, tmp_path) -> None:
    bad = fake("bad", metadata={"tokenizer": {"pre_tokenizer": "default"}})
    ref = fake("ref", metadata={"tokenizer": {"pre_tokenizer": "qwen2"}})
    result = check(qgate, tmp_path, bad, ref)["tokenizer-parity.fingerprint_differences"]
    assert result.verdict is Verdict.FAIL
    assert "pre_tokenizer: 'default' vs the reference's 'qwen2'" in result.message
    prints = result.details["fingerprints"]
    assert prints["subject"] != prints["reference"] and len(prints["subject"]) == 64


def test_across_formats_only_the_flags_compare(qgate, fake, tmp_path) -> None:
    other = {"family": "another-format", "pre_tokenizer": "Split", "components": {"x": "1"}}
    same = fake("same", metadata={"tokenizer": other})
    results = check(qgate, tmp_path, same, fake("ref"))
    stored = results["tokenizer-parity.fingerprint_differences"]
    assert stored.verdict is Verdict.PASS and "store tokenizers differently" in stored.message
    no_bos = fake("no-bos", metadata={"tokenizer": {**other, "add_bos": False}})
    stored = check(qgate, tmp_path, no_bos, fake("ref"))["tokenizer-parity.fingerprint_differences"]
    assert stored.verdict is Verdict.FAIL and "add_bos: False" in stored.message


def test_fingerprint_differences_can_be_reported_only(qgate, fake, tmp_path) -> None:
    policy = PARITY.replace(
        "  - use: tokenizer-parity\n",
        "  - use: tokenizer-parity\n    options: {compare_fingerprint: false}\n",
    )
    bad = fake("bad", metadata={"tokenizer": {"components": {"merges": "other"}}})
    result = check(qgate, tmp_path, bad, fake("ref"), policy)
    stored = result["tokenizer-parity.fingerprint_differences"]
    assert stored.verdict is Verdict.PASS and stored.value == 2  # merges added, vocabulary gone
    assert "merges" in stored.message


# -- special-tokens ------------------------------------------------------------------------


def test_another_eos_id_is_named(qgate, fake, tmp_path) -> None:
    bad = fake(
        "bad",
        metadata={
            "tokenizer": {
                "special": {"bos": {"id": 256, "text": "<s>"}, "eos": {"id": 0, "text": "<pad>"}}
            }
        },
    )
    results = check(qgate, tmp_path, bad, fake("ref"))
    special = results["special-tokens.special_token_differences"]
    assert special.verdict is Verdict.FAIL
    assert "EOS token: id 0 '<pad>' vs the reference's id 257 '</s>'" in special.message


def test_a_missing_eos_differs_and_an_extra_pad_does_not(qgate, fake, tmp_path) -> None:
    bad = fake(
        "bad",
        metadata={
            "tokenizer": {
                "special": {"bos": {"id": 256, "text": "<s>"}, "pad": {"id": 0, "text": "<pad>"}}
            }
        },
    )
    special = check(qgate, tmp_path, bad, fake("ref"))["special-tokens.special_token_differences"]
    assert special.verdict is Verdict.FAIL and special.value == 1
    assert "EOS token: none" in special.message


def test_across_formats_special_tokens_compare_by_text(qgate, fake, tmp_path) -> None:
    def other(eos: str) -> dict[str, Any]:
        return {
            "tokenizer": {
                "family": "another-format",
                "special": {"bos": {"id": 1, "text": "<s>"}, "eos": {"id": 2, "text": eos}},
            }
        }

    same = check(qgate, tmp_path, fake("same", metadata=other("</s>")), fake("ref"))
    assert same["special-tokens.special_token_differences"].verdict is Verdict.PASS
    differs = check(qgate, tmp_path, fake("differs", metadata=other("<eos>")), fake("ref"))
    result = differs["special-tokens.special_token_differences"]
    assert result.verdict is Verdict.FAIL and "compared by text across formats" in result.message


def test_a_subject_that_no_longer_stops_fails_and_names_the_prompts(qgate, fake, tmp_path) -> None:
    chat = {"chat_template": TEMPLATE}
    results = check(
        qgate, tmp_path, fake("runs-on", repeat_after=0, metadata=chat), fake("ref", metadata=chat)
    )
    stopping = results["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.FAIL
    assert stopping.value == pytest.approx(1.0)
    assert "ran to the budget where the reference stopped: sum, capital" in stopping.message
    assert len(stopping.figures.samples) == 3 and stopping.figures.tables
    assert stopping.details["runaway"][:2] == ["sum", "capital"]


def test_a_subject_that_stops_like_the_reference_passes(qgate, fake, tmp_path) -> None:
    chat = {"chat_template": TEMPLATE}
    results = check(qgate, tmp_path, fake("q", metadata=chat), fake("ref", metadata=chat))
    stopping = results["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.PASS and stopping.value == 0
    assert stopping.details["runaway"] == []


def test_a_reference_that_rarely_stops_gives_no_signal(qgate, fake, tmp_path) -> None:
    chat = {"chat_template": TEMPLATE}
    results = check(
        qgate,
        tmp_path,
        fake("q", repeat_after=0, metadata=chat),
        fake("ref", repeat_after=0, metadata=chat),
    )
    stopping = results["special-tokens.stop_rate_drop"]
    assert stopping.verdict is Verdict.SKIP and stopping.skip_cause is SkipCause.NO_SIGNAL
    assert "the reference 0" in stopping.message


# -- chat-template -------------------------------------------------------------------------


def test_a_missing_chat_template_fails(qgate, fake, tmp_path) -> None:
    results = check(qgate, tmp_path, fake("q"), fake("ref", metadata={"chat_template": TEMPLATE}))
    template = results["chat-template.template_differences"]
    assert template.verdict is Verdict.FAIL and template.value == 4
    assert "chat template missing" in template.message


def test_a_template_that_renders_alike_passes_and_one_that_does_not_fails(
    qgate, fake, tmp_path
) -> None:
    ref = fake("ref", metadata={"chat_template": TEMPLATE})
    spaced = TEMPLATE.replace("{{ m['role'] }}", "{{m['role']}}")
    alike = check(qgate, tmp_path, fake("q", metadata={"chat_template": spaced}), ref)
    result = alike["chat-template.template_differences"]
    assert result.verdict is Verdict.PASS and "renders all 4 conversations" in result.message
    changed = TEMPLATE.replace("</s>", "<|end|>")
    differs = check(qgate, tmp_path, fake("changed", metadata={"chat_template": changed}), ref)
    result = differs["chat-template.template_differences"]
    assert result.verdict is Verdict.FAIL and result.value == 4
    assert "one turn: at character" in result.message and "<|end|>" in result.message


def test_a_template_the_sandbox_refuses_differs_from_one_it_renders(qgate, fake, tmp_path) -> None:
    ref = fake("ref", metadata={"chat_template": TEMPLATE})
    hostile = "{{ ''.__class__.__mro__ }}"
    result = check(qgate, tmp_path, fake("q", metadata={"chat_template": hostile}), ref)
    template = result["chat-template.template_differences"]
    assert template.verdict is Verdict.FAIL and "refused" in template.message


# -- config-parity -------------------------------------------------------------------------


def test_a_lost_rope_base_is_named_with_the_runtimes_reading(qgate, fake, tmp_path) -> None:
    lost = {"rope_base": 10000.0, "readings": {"rope_base": "absent: the runtime's default"}}
    results = check(
        qgate,
        tmp_path,
        fake("lost", metadata={"config": lost}),
        fake("ref", metadata={"config": {"rope_base": 1e6}}),
    )
    config = results["config-parity.config_differences"]
    assert config.verdict is Verdict.FAIL and config.value == 1
    assert "rope_base: 10000 vs the reference's 1e+06" in config.message
    assert "subject: absent: the runtime's default" in config.message
    assert config.figures.tables[0].rows[0][0] == "rope_base"


def test_float32_rounding_is_not_a_difference(qgate, fake, tmp_path) -> None:
    near = fake("near", metadata={"config": {"norm_eps": 9.999999974752427e-07}})
    results = check(qgate, tmp_path, near, fake("ref", metadata={"config": {"norm_eps": 1e-6}}))
    assert results["config-parity.config_differences"].value == 0


def test_which_differences_fail_is_policy(qgate, fake, tmp_path) -> None:
    tied = fake("tied", metadata={"config": {"tied_embeddings": True, "context_length": 2048}})
    ref = fake("ref", metadata={"config": {"tied_embeddings": False}})
    results = check(qgate, tmp_path, tied, ref)
    config = results["config-parity.config_differences"]
    assert config.value == 1 and "context_length: 2048" in config.message
    assert "also differs (reported only): tied_embeddings" in config.message
    policy = PARITY.replace(
        "  - use: config-parity\n", "  - use: config-parity\n    options: {fail_on: [rope_base]}\n"
    )
    relaxed = check(qgate, tmp_path, tied, ref, policy)["config-parity.config_differences"]
    assert relaxed.verdict is Verdict.PASS and "context_length" in relaxed.message


def test_an_unknown_field_in_fail_on_cannot_pass(qgate, fake, tmp_path) -> None:
    policy = PARITY.replace(
        "  - use: config-parity\n", "  - use: config-parity\n    options: {fail_on: [rope_bsae]}\n"
    )
    results = check(qgate, tmp_path, fake("q"), fake("ref"), policy)
    config = next(r for n, r in results.items() if n.startswith("config-parity"))
    assert config.verdict is Verdict.ERROR and "rope_bsae" in config.message


# -- tensor-integrity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("nan", "blk.3.ffn_down.weight: 258 NaN or infinite values (F16)"),
        ("zero", "blk.3.ffn_down.weight: all zero"),
        ("short", "blk.3.ffn_down.weight: stored short: the file ends 1024 bytes short"),
    ],
)
def test_a_faulty_tensor_is_named(qgate, fake, tmp_path, fault: str, said: str) -> None:
    bad = fake("bad", tensor_faults={"blk.3.ffn_down.weight": fault})
    result = check(qgate, tmp_path, bad, None)["tensor-integrity.faulty_tensors"]
    assert result.verdict is Verdict.FAIL and result.value == 1
    assert said in result.message
    (row,) = result.figures.tables[0].rows
    assert row[0] == "blk.3.ffn_down.weight" and row[1] in said + result.message


def test_a_backend_that_cannot_hand_out_tensors_cannot_pass(qgate, fake, tmp_path, monkeypatch):
    from qgate.testing import FakeBackend

    monkeypatch.setattr(FakeBackend, "scan_tensors", lambda self, path: None)
    result = check(qgate, tmp_path, fake("q"), None)["tensor-integrity.faulty_tensors"]
    assert result.verdict is Verdict.ERROR and "nothing was checked" in result.message


# -- runtime-parity ------------------------------------------------------------------------


def test_a_subject_far_better_than_its_reference_is_implausible(qgate, fake, tmp_path) -> None:
    # a "reference" with heavy damage: the subject looks far better, as a runtime that sees
    # future tokens would
    results = check(qgate, tmp_path, fake("q"), fake("ref", noise=2.0))
    result = results["runtime-parity.ppl_improvement"]
    assert result.verdict is Verdict.FAIL and result.value > 0.5
    assert "implausible for a quantization of it" in result.message


def test_one_runtime_has_no_floor(qgate, fake, tmp_path) -> None:
    results = check(qgate, tmp_path, fake("q", noise=0.2), fake("ref"))
    assert "runtime-parity.runtime_floor_kld" not in results
    assert "one runtime (fake): no floor" in results["runtime-parity.ppl_improvement"].message
