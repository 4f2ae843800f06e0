"""Record the run the README's screenshot is taken from: a tiny random llama (tests/tiny_gguf.py,
1.4M parameters) in F16 and its Q8_0 and Q2_K quants, under the production policy.

    python benchmarks/tiny_run.py models/tiny/ docs/runs/

builds the three GGUFs into models/tiny/ (11 MB, seconds), runs ``qgate check`` from that folder
(so the results record bare file names) with ``--n-ctx 1024`` (the byte-level tokenizer of the
tiny model makes task-accuracy's longest prompt 623 tokens, over production's 512), and writes
``tiny-production.{json,html,md}`` into docs/runs/. About a minute on 2 cores. The model is
random: its figures say nothing about a real quant; the real ones are in the README's tables,
from benchmarks/readme_run.py. tests/test_browser.py renders the JSON in Chromium for the
screenshot (``QGATE_UPDATE_SCREENSHOT=1`` replaces docs/images/report.png).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "tiny-production"


def build(directory: Path) -> dict[str, Path]:
    sys.path.insert(0, str(REPO))
    from qgate_gguf.quantize import quantize
    from tests.tiny_gguf import write_tiny_llama

    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "tiny-f32.gguf"
    if not source.exists():
        write_tiny_llama(source)
    paths = {}
    for file_type in ("F16", "Q8_0", "Q2_K"):
        target = directory / f"tiny-{file_type.lower()}.gguf"
        if not target.exists():
            quantize(source, target, file_type)
        paths[file_type] = target
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, help="where the tiny ladder is (or is built)")
    parser.add_argument("out", type=Path, help="where the results and reports go")
    args = parser.parse_args()
    models = args.models.resolve()
    build(models)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = [
        *("qgate", "check", "tiny-q8_0.gguf", "tiny-q2_k.gguf", "--reference", "tiny-f16.gguf"),
        *("--policy", "production", "--n-ctx", "1024", "--no-cache"),
        *("--json", str(out / f"{NAME}.json"), "--html", str(out / f"{NAME}.html")),
        *("--markdown", str(out / f"{NAME}.md")),
    ]
    started = time.perf_counter()
    code = subprocess.call(command, cwd=models, env={**os.environ, "COLUMNS": "100"})
    print(f"qgate exit code {code} after {time.perf_counter() - started:.0f} s")
    for suffix in ("json", "html", "md"):
        shorten_paths(out / f"{NAME}.{suffix}", {f"{models}/": "models/tiny/", f"{REPO}/": ""})


def shorten_paths(path: Path, prefixes: dict[str, str]) -> None:
    """The provenance records absolute paths (the policy file, each model's resolved path, the
    report paths in the command); in the committed record they are made relative to the
    repository, so it names no folder of the machine it ran on. Figures are untouched."""
    text = path.read_text(encoding="utf-8")
    for prefix, short in prefixes.items():
        text = text.replace(prefix, short)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
