"""The parity checks on real formats: tiny GGUF files broken the way published quants were, and
model folders whose config.json only transformers 5 writes.

The broken GGUF copies are made as users made them: ``gguf-new-metadata`` (the ``gguf``
package's script) with another pre-tokenizer, another EOS id, the chat template removed; the NaN
block scales are written with the ``gguf`` writer. Every copy keeps the reference's weights, so
the likelihood checks pass them all: only the parity checks can say what is wrong. The same
cases on a real model are in test_parity_real.py and benchmarks/parity_cases.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qgate.results import CheckResult, RunReport, Verdict
from tests.conftest import needs_llama_cpp

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: production's parity checks after its two likelihood checks, on a small budget
POLICY = """
backend: {n_ctx: 128}
evaluation: {chunks: 2}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.01, per_domain: false}
  - use: kl-divergence
    options: {max_mean: 0.01}
  - use: tokenizer-parity
  - use: special-tokens
  - use: chat-template
  - use: config-parity
  - use: tensor-integrity
  - use: runtime-parity
"""


def run(
    qgate: Any, tmp_path: Path, subjects: list[Path], reference: Path | None, policy: str
) -> dict[str, dict[str, CheckResult]]:
    """``qgate check`` of ``subjects``: each subject's file name -> its results by name."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    out = tmp_path / "r.json"
    args: list[str | Path] = ["check", *subjects, "--policy", policy_file, "--json", out, "-q"]
    if reference is not None:
        args += ["--reference", reference]
    result = qgate(*args)
    assert result.code in (0, 1), result
    report = RunReport.from_dict(json.loads(out.read_text()))
    return {Path(s.path).name: {r.name: r for r in s.results} for s in report.subjects}


def new_metadata(source: Path, target: Path, *arguments: str) -> Path:
    """A copy of ``source`` made by gguf-new-metadata with ``arguments``."""
    script = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force"]
    subprocess.run([*script, *arguments, str(source), str(target)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def broken_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny llama with a chat template and its copies with one metadata fault each."""
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    directory = tmp_path_factory.mktemp("parity-gguf")
    reference = write_tiny_llama(directory / "ref.gguf", chat_template=TEMPLATE)
    clean = directory / "clean.gguf"
    shutil.copyfile(reference, clean)
    return {
        "reference": reference,
        "clean": clean,
        "pre": new_metadata(reference, directory / "pre.gguf", "--pre-tokenizer", "default"),
        "eos": new_metadata(reference, directory / "eos.gguf", "--special-token-by-id", "eos", "0"),
        "template": new_metadata(
            reference, directory / "template.gguf", "--remove-metadata", "tokenizer.chat_template"
        ),
    }


@needs_llama_cpp
def test_metadata_faults_pass_the_likelihood_checks_and_fail_parity_by_name(
    qgate, tmp_path, broken_copies
) -> None:
    names = ("clean", "pre", "eos", "template")
    results = run(
        qgate, tmp_path, [broken_copies[n] for n in names], broken_copies["reference"], POLICY
    )
    for name in names:  # bit-identical weights: the likelihood checks see nothing
        subject = results[f"{name}.gguf"]
        assert subject["perplexity.ppl_delta"].verdict is Verdict.PASS, name
        assert subject["kl-divergence.kld_mean"].verdict is Verdict.PASS, name
    clean = results["clean.gguf"]
    blocking = {n: r.message for n, r in clean.items() if r.verdict.is_blocking}
    assert not blocking
    assert "character for character" in clean["chat-template.template_differences"].message
    assert clean["tensor-integrity.faulty_tensors"].verdict is Verdict.PASS

    pre = results["pre.gguf"]["tokenizer-parity.fingerprint_differences"]
    assert pre.verdict is Verdict.FAIL
    assert pre.message.startswith("pre_tokenizer: 'default' vs the reference's none")

    eos = results["eos.gguf"]["special-tokens.special_token_differences"]
    assert eos.verdict is Verdict.FAIL
    assert "EOS token: id 0 '<unk>' vs the reference's id 2 '</s>'" in eos.message
    # the same file's tokenizer facts differ in the EOS id too
    eos_stored = results["eos.gguf"]["tokenizer-parity.fingerprint_differences"]
    assert eos_stored.verdict is Verdict.FAIL and "eos token" in eos_stored.message

    template = results["template.gguf"]["chat-template.template_differences"]
    assert template.verdict is Verdict.FAIL and template.value == 4
    assert "chat template missing" in template.message


@needs_llama_cpp
def test_nan_block_scales_are_found_and_the_tensor_named(qgate, tmp_path) -> None:
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    clean = write_tiny_llama(tmp_path / "clean-q8_0.gguf", q8_0=True)
    broken = write_tiny_llama(
        tmp_path / "nan-q8_0.gguf", q8_0=True, nan_blocks={"blk.1.ffn_down.weight": 61}
    )
    policy = "backend: {n_ctx: 128}\nchecks:\n  - use: tensor-integrity\n"
    results = run(qgate, tmp_path, [clean, broken], None, policy)
    ok = results["clean-q8_0.gguf"]["tensor-integrity.faulty_tensors"]
    assert ok.verdict is Verdict.PASS and "all 21 tensors whole and finite" in ok.message
    bad = results["nan-q8_0.gguf"]["tensor-integrity.faulty_tensors"]
    assert bad.verdict is Verdict.FAIL and bad.value == 1
    assert bad.message.startswith(
        "1 faulty tensor: blk.1.ffn_down.weight: 61 NaN or infinite block scales (Q8_0)"
    )
    assert bad.figures.tables[0].rows == [
        ["blk.1.ffn_down.weight", "61 NaN or infinite block scales (Q8_0)"]
    ]


@needs_llama_cpp
def test_a_tensor_of_another_shape_than_the_references_is_named(qgate, tmp_path) -> None:
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    reference = write_tiny_llama(tmp_path / "ref.gguf", n_ff=512)
    other = write_tiny_llama(tmp_path / "other.gguf", n_ff=256)
    policy = "backend: {n_ctx: 128}\nchecks:\n  - use: tensor-integrity\n"
    results = run(qgate, tmp_path, [other], reference, policy)
    result = results["other.gguf"]["tensor-integrity.faulty_tensors"]
    assert result.verdict is Verdict.FAIL and result.value == 6  # 3 FFN matrices x 2 layers
    assert "blk.0.ffn_gate.weight: shape [256, 256], the reference's is [256, 512]" in (
        result.message
    )


# -- configuration written by transformers 5 -----------------------------------------------

ROPE_PARAMETERS = {"rope_theta": 100000.0, "rope_type": "default"}


def folders(tmp_path: Path, rope: dict[str, Any]) -> tuple[Path, Path]:
    """An EXL2 folder and a Hugging Face folder whose config.json give the RoPE only as
    ``rope_parameters`` (transformers 5)."""
    pytest.importorskip("safetensors")
    import numpy as np
    from safetensors.numpy import save_file

    from tests.test_exl2_awq import CONFIG, write_exl2

    exl2 = write_exl2(tmp_path / "exl2")
    config = json.loads((exl2 / "config.json").read_text())
    (exl2 / "config.json").write_text(json.dumps({**config, "rope_parameters": rope}))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({**CONFIG, "rope_parameters": rope}))
    embedding = np.zeros((CONFIG["vocab_size"], CONFIG["hidden_size"]), np.float16)
    save_file({"model.embed_tokens.weight": embedding}, str(hf / "model.safetensors"))
    return exl2, hf


def test_transformers_5_rope_parameters_are_read_as_transformers_and_exllamav2_read_them(
    tmp_path,
) -> None:
    from qgate_exl2 import EXL2Backend
    from qgate_hf import HFBackend

    exl2, hf = folders(tmp_path, ROPE_PARAMETERS)
    ours, theirs = EXL2Backend().inspect(exl2).config, HFBackend().inspect(hf).config
    assert ours is not None and theirs is not None
    assert theirs.runtime == "transformers" and theirs.rope_base == 100000.0
    assert ours.runtime == "exllamav2" and ours.rope_base == 10000.0
    assert "rope_parameters.rope_theta = 100000 (transformers 5)" in ours.readings["rope_base"]


def test_config_parity_names_the_rope_base_exllamav2_would_run_with(qgate, tmp_path) -> None:
    exl2, hf = folders(tmp_path, ROPE_PARAMETERS)
    policy = "backend: {n_ctx: 128}\nchecks:\n  - use: config-parity\n"
    result = run(qgate, tmp_path, [exl2], hf, policy)["exl2"]["config-parity.config_differences"]
    assert result.verdict is Verdict.FAIL and result.value == 1
    assert result.message.startswith(
        "1 hyperparameter differs from the reference's, as exllamav2 and transformers read them: "
        "rope_base: 10000 vs the reference's 100000 (subject: exllamav2 reads the RoPE base from "
        "rope_theta"
    )
    assert result.details["differences"] == {"rope_base": [10000.0, 100000.0]}


def test_per_layer_type_rope_parameters_and_scaling(tmp_path) -> None:
    from qgate_hf import HFBackend

    rope = {
        "full_attention": {
            "rope_theta": 1000000.0,
            "rope_type": "linear",
            "factor": 8.0,
        },
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
    }
    exl2, hf = folders(tmp_path, rope)
    config = HFBackend().inspect(hf).config
    assert config is not None
    assert (config.rope_base, config.rope_base_local) == (1000000.0, 10000.0)
    assert (config.rope_scaling, config.rope_scaling_factor) == ("linear", 8.0)
    from qgate_exl2 import EXL2Backend

    exl2_config = EXL2Backend().inspect(exl2).config
    assert exl2_config is not None and exl2_config.rope_scaling == "none"
    assert "exllamav2 runs unscaled" in exl2_config.readings["rope_scaling"]


# -- one BOS convention, and a refusal that shows both sequences ---------------------------


def byte_level_tokenizer(*, adds_bos: bool) -> Any:
    """A small byte-level BPE that names ``<s>`` as its BOS; it puts it first only when
    ``adds_bos`` (Llama's tokenizers do, Qwen's do not)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["The gate measures each quant against its reference. 1234"], trainer)
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("adds_bos", [True, False])
def test_a_bos_is_added_only_when_the_tokenizer_adds_one_itself(adds_bos: bool) -> None:
    from qgate_transformers.tokenizer import hf_tokenize, special_affixes

    tok = byte_level_tokenizer(adds_bos=adds_bos)
    bos = tok.convert_tokens_to_ids("<s>")
    affixes = special_affixes(tok)
    assert affixes == (([bos] if adds_bos else []), [])
    text = "The gate <s> 1234"
    plain = hf_tokenize(tok, text, add_bos=False, affixes=affixes)
    assert bos not in plain  # special-token text stays text
    with_bos = hf_tokenize(tok, text, add_bos=True, affixes=affixes)
    assert with_bos == ([bos, *plain] if adds_bos else plain)


def test_a_refusal_shows_both_sequences_where_they_part() -> None:
    from qgate.token_diff import first_divergence, show_divergence

    pieces = {1: "<s>", 10: "In", 11: " 19", 12: "8", 13: "4", 14: " 1984", 15: ","}

    def detokenize(ids: Any) -> str:
        return "".join(pieces[i] for i in ids)

    ours, theirs = [10, 11, 12, 13, 15], [10, 14, 15]
    at = first_divergence(ours, theirs)
    assert at == 1 and first_divergence(theirs, theirs) is None
    assert first_divergence([1, *theirs], theirs) == 0
    shown = show_divergence(at, [("q.gguf", ours, detokenize), ("ref", theirs, detokenize)])
    assert shown == (
        "at token 1, after 'In', q.gguf has [11 ' 19', 12 '8', 13 '4', 15 ','] (5 tokens in all) "
        "and ref has [14 ' 1984', 15 ','] (3 tokens in all)"
    )


def hf_from_gguf(source: Path, folder: Path) -> Path:
    """The Hugging Face folder transformers makes of the GGUF file ``source`` (weights
    dequantized, tokenizer converted), as a user who wants the HF original of a quant would."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    model.hf_quantizer = None  # the F32 weights are plain weights once loaded
    del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def without_bos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny llama whose tokenizer adds no BOS (``add_bos_token = false``, as Qwen's), the HF
    folder made from that very file, and one made from its twin that adds a BOS."""
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    root = tmp_path_factory.mktemp("bos")
    (root / "no-bos").mkdir()
    (root / "bos").mkdir()
    gguf = write_tiny_llama(root / "no-bos" / "tiny.gguf", add_bos=False)
    twin = write_tiny_llama(root / "bos" / "tiny.gguf")
    return {
        "gguf": gguf,
        "hf": hf_from_gguf(gguf, root / "hf-no-bos"),
        "hf-bos": hf_from_gguf(twin, root / "hf-bos"),
    }


BOS_POLICY = """
backend: {n_ctx: 128}
evaluation: {chunks: 2}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.01, per_domain: false}
  - use: tokenizer-parity
"""


@needs_llama_cpp
def test_a_gguf_without_bos_compares_with_the_hf_folder_made_from_it(
    qgate, tmp_path, without_bos
) -> None:
    results = run(qgate, tmp_path, [without_bos["gguf"]], without_bos["hf"], BOS_POLICY)
    subject = results["tiny.gguf"]
    assert {n: r.verdict for n, r in subject.items()} == {
        "perplexity.ppl_delta": Verdict.PASS,
        "tokenizer-parity.probe_mismatches": Verdict.PASS,
        "tokenizer-parity.fingerprint_differences": Verdict.PASS,
    }
    assert subject["perplexity.ppl_delta"].value == pytest.approx(0.0, abs=1e-3)


@needs_llama_cpp
def test_a_real_bos_difference_is_refused_showing_both_sequences(
    qgate, tmp_path, without_bos
) -> None:
    results = run(qgate, tmp_path, [without_bos["gguf"]], without_bos["hf-bos"], BOS_POLICY)
    subject = results["tiny.gguf"]
    refusal = subject["perplexity"]  # an error carries no metric
    assert refusal.verdict is Verdict.ERROR
    assert "tokenizers differ" in refusal.message and "at token 0, after ''" in refusal.message
    # both sequences, each with its own first tokens: the reference's starts with its BOS (id 1)
    assert "tiny.gguf has [229 " in refusal.message
    assert "the reference hf-bos has [1 '', 229 " in refusal.message
    stored = subject["tokenizer-parity.fingerprint_differences"]
    assert stored.verdict is Verdict.FAIL
    assert stored.message.startswith("add_bos: False vs the reference's True")


@needs_llama_cpp
def test_a_rope_base_lost_in_conversion_is_named_with_llama_cpps_default(qgate, tmp_path) -> None:
    """llama.cpp issue 8330: a converter that drops the RoPE base leaves a file llama.cpp runs
    with its default 10000."""
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    reference = write_tiny_llama(tmp_path / "ref.gguf", rope_base=500000.0)
    lost = write_tiny_llama(tmp_path / "lost.gguf", context_length=2048)
    policy = "backend: {n_ctx: 128}\nchecks:\n  - use: config-parity\n"
    result = run(qgate, tmp_path, [lost], reference, policy)["lost.gguf"]
    config = result["config-parity.config_differences"]
    assert config.verdict is Verdict.FAIL and config.value == 2
    assert config.message.startswith(
        "2 hyperparameters differ from the reference's, as llama.cpp read them: "
        "context_length: 2048 vs the reference's 4096; rope_base: 10000 vs the reference's "
        "500000 (subject: llama.rope.freq_base is absent from the file: llama.cpp runs with its "
        "default 10000)"
    )


def floor_policy(full_precision: Path) -> str:
    return (
        "backend: {n_ctx: 128}\nevaluation: {chunks: 2}\ndatasets: [en]\nchecks:\n"
        f"  - use: runtime-parity\n    options: {{full_precision: '{full_precision}'}}\n"
    )


@needs_llama_cpp
def test_the_runtime_floor_of_llama_cpp_against_transformers(qgate, tmp_path, without_bos) -> None:
    """An F16 GGUF against the Hugging Face folder of its F32 original: llama.cpp runs the F32
    GGUF (the reference's own weights) as transformers runs the folder, so the floor is ~0 and
    the damage over it is the F16 rounding's."""
    from qgate_gguf.quantize import quantize

    subject = quantize(without_bos["gguf"], tmp_path / "f16.gguf", "F16")
    results = run(qgate, tmp_path, [subject], without_bos["hf"], floor_policy(without_bos["gguf"]))
    floor = results["f16.gguf"]["runtime-parity.runtime_floor_kld"]
    assert floor.verdict is Verdict.PASS and floor.value is not None and floor.value < 1e-5
    assert "through gguf: mean KLD" in floor.message and "damage over this floor" in floor.message
    assert results["f16.gguf"]["runtime-parity.ppl_improvement"].verdict is Verdict.PASS


@needs_llama_cpp
def test_a_floor_beyond_the_limit_is_an_error_not_the_quants_failure(
    qgate, tmp_path, without_bos
) -> None:
    """Full-precision weights that the subject's runtime turns into another model (here, to
    stand in for such a runtime, another model's weights) make the floor itself fail."""
    from qgate_gguf.quantize import quantize
    from tests.tiny_gguf import write_tiny_llama

    subject = quantize(without_bos["gguf"], tmp_path / "f16.gguf", "F16")
    other = write_tiny_llama(tmp_path / "other.gguf", seed=1, add_bos=False)
    results = run(qgate, tmp_path, [subject], without_bos["hf"], floor_policy(other))
    floor = results["f16.gguf"]["runtime-parity.runtime_floor_kld"]
    assert floor.verdict is Verdict.ERROR and floor.value is None
    assert floor.message.startswith(
        "the runtime disagrees with the reference at full precision: the reference's "
        "full-precision weights (other.gguf, options.full_precision) through gguf: mean KLD"
    )
    assert floor.message.endswith(
        "the quant's failures against this reference are not its quantization's"
    )
