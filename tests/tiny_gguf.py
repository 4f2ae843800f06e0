"""Tiny but real GGUF models, written with the ``gguf`` package, for the tests.

A 2-layer llama with a byte vocabulary (SPM ``<0xNN>`` tokens) loads in llama.cpp, quantizes in
well under a second and costs a few MB: enough to run every code path on a real engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_llama(
    path: Path,
    *,
    seed: int = 0,
    n_embd: int = 256,
    n_layers: int = 2,
    n_ff: int = 512,
    n_head: int = 4,
    context_length: int = 4096,
    name: str = "tiny-llama",
    finetune: str | None = None,
    chat_template: str | None = None,
    delta: dict[str, float] | None = None,
    delta_seed: int = 99,
    vocab_extra: int = 0,
    q8_0: bool = False,
    nan_blocks: dict[str, int] | None = None,
    add_bos: bool | None = None,
    rope_base: float | None = None,
) -> Path:
    """Write a random-weight llama GGUF in F32.

    :param delta: tensor-name substring -> std of a perturbation added to matching tensors,
        to make a "fine-tune" of the model with the same ``seed``.
    :param vocab_extra: extra ordinary tokens (``<extra_N>``) appended to the byte vocabulary,
        to make a model whose tokenizer differs from the default one.
    :param q8_0: store the weight matrices as Q8_0 (quantized here by the ``gguf`` package).
    :param nan_blocks: tensor name -> how many of its first Q8_0 blocks get a NaN scale, as in
        published quants with NaN block scales (needs ``q8_0``).
    :param add_bos: write ``tokenizer.ggml.add_bos_token`` (llama.cpp's default for this
        vocabulary, without it: add one); False as in Qwen's GGUF files.
    :param rope_base: write ``llama.rope.freq_base`` (without it llama.cpp runs with 10000).
    """
    import gguf

    rng = np.random.default_rng(seed)
    delta_rng = np.random.default_rng(delta_seed)
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    tokens += [f"<extra_{i}>".encode() for i in range(vocab_extra)]
    n_vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    if finetune:
        writer.add_finetune(finetune)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    if rope_base is not None:
        writer.add_rope_freq_base(rope_base)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_0 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.NORMAL] * vocab_extra
    )
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def tensor(name: str, shape: tuple[int, ...], std: float) -> None:
        data = rng.standard_normal(shape).astype(np.float32) * std
        for pattern, amount in (delta or {}).items():
            if pattern in name:
                data += delta_rng.standard_normal(shape).astype(np.float32) * amount
        if not q8_0:
            writer.add_tensor(name, data)
            return
        kind = gguf.GGMLQuantizationType.Q8_0
        packed = gguf.quants.quantize(data, kind)
        blocks = packed.reshape(-1, gguf.GGML_QUANT_SIZES[kind][1])
        blocks[: (nan_blocks or {}).get(name, 0), 0:2] = np.frombuffer(b"\x00\x7e", np.uint8)
        writer.add_tensor(name, packed, raw_dtype=kind)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    tensor("token_embd.weight", (n_vocab, n_embd), 1.0)
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        norm(f"{prefix}.attn_norm.weight")
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{prefix}.{part}.weight", (n_embd, n_embd), 0.06)
        norm(f"{prefix}.ffn_norm.weight")
        tensor(f"{prefix}.ffn_gate.weight", (n_ff, n_embd), 0.06)
        tensor(f"{prefix}.ffn_up.weight", (n_ff, n_embd), 0.06)
        tensor(f"{prefix}.ffn_down.weight", (n_embd, n_ff), 0.04)
    norm("output_norm.weight")
    tensor("output.weight", (n_vocab, n_embd), 0.15)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
