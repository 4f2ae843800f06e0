"""Record the run the README's figures come from: Gemma 3 270M Q8_0 and Q2_K against its F16,
under production plus payoff (benchmarks/readme-run.yaml).

    python benchmarks/readme_run.py models/ docs/runs/

builds the ladder into models/ (benchmarks/gemma_ladder.py), runs ``qgate check`` from a folder in
which ``models/`` names it (so the results record short paths), and writes
``gemma-production.{json,html,md}`` into docs/runs/. The README's tables are generated from the
JSON (``python benchmarks/readme_tables.py --write``) and tests/test_readme_figures.py keeps them
equal. (The README's screenshot is of another recorded run, benchmarks/tiny_run.py's.) A second
CPU job on the same cores slows the payoff timing and widens its intervals; nothing else in the
figures depends on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICY = HERE / "readme-run.yaml"
NAME = "gemma-production"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, help="where the Gemma ladder is (or is built)")
    parser.add_argument("out", type=Path, help="where the results and reports go")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from gemma_ladder import build

    paths = build(args.models.resolve(), ("Q8_0", "Q2_K"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        os.symlink(paths["F16"].parent, Path(workdir) / "models")
        command = [  # the qgate of this interpreter, whether or not its scripts are on PATH
            *(sys.executable, "-m", "qgate", "check"),
            *("models/gemma-q8_0.gguf", "models/gemma-q2_k.gguf"),
            *("--reference", "models/gemma-f16.gguf", "--policy", str(POLICY), "--no-cache"),
            *("--json", str(out / f"{NAME}.json"), "--html", str(out / f"{NAME}.html")),
            *("--markdown", str(out / f"{NAME}.md")),
        ]
        started = time.perf_counter()
        code = subprocess.call(command, cwd=workdir)
    print(f"qgate exit code {code} after {time.perf_counter() - started:.0f} s")
    from tiny_run import shorten_paths

    for suffix in ("json", "html", "md"):  # name no folder of the machine it ran on
        prefixes = {f"{paths['F16'].parent}/": "models/", f"{HERE.parent}/": ""}
        shorten_paths(out / f"{NAME}.{suffix}", prefixes)


if __name__ == "__main__":
    main()
