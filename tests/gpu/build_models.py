"""Build the small Hugging Face Llama that tests/gpu/run_gpu.sh quantizes and gates.

A byte-level BPE tokenizer (1,024 tokens) is trained on qgate's shipped corpora, and a 4-layer,
256-wide Llama is trained for a few hundred steps on the same text (seconds on a GPU), so the
model has real structure and lower bit widths measurably hurt it. Weights are saved as
safetensors in float16, the usual input of exllamav2's converter and of AWQ quantizers.

    python3 tests/gpu/build_models.py OUT_DIR [--steps 400] [--awq AWQ_DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

CORPORA = Path(__file__).resolve().parents[2] / "qgate" / "data" / "corpora"


def corpus() -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(CORPORA.glob("*.txt")))


def build_tokenizer(text: str, vocab_size: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def build(out: Path, steps: int, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text = corpus()
    tokenizer = build_tokenizer(text, 1024)
    config = LlamaConfig(
        vocab_size=1024,  # a multiple of 128 (>= the tokenizer's size) for the EXL2 head kernels
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(device)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], device=device)
    # 512-token windows: qgate scores positions 257-511 of each 512-token chunk, and a model never
    # trained that far would be judged on positions it has never seen
    seq, batch = 512, 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), device=device)
        x = torch.stack([ids[s : s + seq] for s in starts])
        x[:, 0] = tokenizer.bos_token_id
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {
        "steps": steps,
        "final_loss": float(loss.item()),
        "seconds": time.perf_counter() - started,
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    print(f"saved {out} ({summary})", flush=True)
    return out


def quantize_awq(source: Path, out: Path, rows: int = 32, length: int = 512) -> bool:
    """AWQ W4 g128 (AutoAWQ GEMM layout) through gptqmodel, if it is installed.

    Calibration: ``rows`` windows of ``length`` tokens of qgate's own corpora, the text the
    model was trained on. Packing uses gptqmodel's pure-torch AWQ kernel, which writes the same
    GEMM layout as the CUDA one without compiling anything (gptqmodel's AUTO choice is CUDA-only
    and JIT-compiles). Tested with gptqmodel 7.5.0.
    """
    import os

    # gptqmodel 7.5 sizes its CPU pool to (cores + 1) // 2 but asks for two loader workers:
    # on a 2-core machine that is an error unless the pool is set explicitly
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))
    try:
        from gptqmodel import BACKEND, GPTQModel
        from gptqmodel.quantization.config import FORMAT, AWQConfig
    except ImportError:
        print("gptqmodel is not installed: no AWQ model", flush=True)
        return False
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = tokenizer(corpus(), add_special_tokens=False)["input_ids"]
    step = max(length, (len(ids) - length) // rows)
    calibration = [
        {"input_ids": ids[i : i + length], "attention_mask": [1] * length}
        for i in range(0, len(ids) - length, step)
    ][:rows]
    config = AWQConfig(bits=4, group_size=128, sym=False, format=FORMAT.GEMM, desc_act=False)
    model = GPTQModel.load(str(source), config, trust_remote_code=False, dtype=torch.float16)
    model.quantize(calibration, batch_size=4, backend=BACKEND.AWQ_TORCH)
    model.save(str(out))
    tokenizer.save_pretrained(out)
    print(f"saved {out} ({len(calibration)} calibration rows of {length} tokens)", flush=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--awq", type=Path, help="also write an AWQ quant here (needs gptqmodel)")
    args = parser.parse_args()
    build(args.out, args.steps)
    if args.awq is not None:
        quantize_awq(args.out, args.awq)


if __name__ == "__main__":
    main()
