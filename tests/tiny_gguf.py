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
) -> Path:
    """Write a random-weight llama GGUF in F32.

    :param delta: tensor-name substring -> std of a perturbation added to matching tensors,
        to make a "fine-tune" of the model with the same ``seed``.
    :param vocab_extra: extra ordinary tokens (``<extra_N>``) appended to the byte vocabulary,
        to make a model whose tokenizer differs from the default one.
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
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
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
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def tensor(name: str, shape: tuple[int, ...], std: float) -> None:
        data = rng.standard_normal(shape).astype(np.float32) * std
        for pattern, amount in (delta or {}).items():
            if pattern in name:
                data += delta_rng.standard_normal(shape).astype(np.float32) * amount
        writer.add_tensor(name, data)

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
