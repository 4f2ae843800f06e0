"""The README's figures, generated from the recorded run (benchmarks/readme_run.py) so the README
and the run cannot disagree.

    python benchmarks/readme_tables.py            # print every block
    python benchmarks/readme_tables.py --write    # replace the blocks in README.md
    python benchmarks/readme_tables.py --check    # exit 1 when README.md differs

Each block sits in README.md between ``<!-- generated: NAME -->`` and ``<!-- /generated -->``.
tests/test_readme_figures.py runs the same comparison.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN = REPO / "docs" / "runs" / "gemma-production.json"
#: the width the README's console block is rendered at
CONSOLE_WIDTH = 100
#: checks shown in the quality table, not again in the table of the others
QUALITY_CHECKS = ("perplexity", "kl-divergence")
BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S
)

if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from qgate.integrity import read_results  # noqa: E402
from qgate.results import CheckResult, RunReport, SubjectReport  # noqa: E402


def load(path: Path = RUN) -> RunReport:
    """The recorded run, read as ``qgate report`` reads it: every verdict recomputed."""
    return read_results(path)


def ordered(report: RunReport) -> list[SubjectReport]:
    """Largest file first: the ladder from the top."""
    return sorted(report.subjects, key=lambda s: -float(s.info.get("file_size") or 0))


def label(subject: SubjectReport) -> str:
    """``Q8_0`` for ``gemma-q8_0.gguf``: the quant's type, as the README names it."""
    file_type = subject.info.get("file_type")
    return str(file_type) if file_type else subject.label


def find(subject: SubjectReport, check: str, metric: str) -> CheckResult | None:
    return next((r for r in subject.results if r.check_id == check and r.metric == metric), None)


def percent(value: float | None, digits: int = 2, sign: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:{'+' if sign else ''}.{digits}f} %"


def interval(result: CheckResult | None, scale: float = 100.0, digits: int = 2) -> str:
    if result is None or result.interval is None:
        return ""
    return f" [{result.interval.low * scale:.{digits}f}, {result.interval.high * scale:.{digits}f}]"


def table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- the blocks ----------------------------------------------------------------------------------
def run_block(report: RunReport) -> str:
    """Which run the tables are: file, policy, models, settings, machine, date."""
    provenance = report.provenance if isinstance(report.provenance, dict) else {}
    policy = provenance.get("policy") if isinstance(provenance.get("policy"), dict) else {}
    options = policy.get("backend_options") or {}
    datasets = [d.get("domain") for d in provenance.get("datasets") or [] if isinstance(d, dict)]
    machine = provenance.get("machine") if isinstance(provenance.get("machine"), dict) else {}
    reference = report.reference or {}
    subjects = ", ".join(label(s) for s in ordered(report))
    ref_info = reference.get("info") if isinstance(reference.get("info"), dict) else {}
    return (
        f"The recorded run, `{RUN.relative_to(REPO).as_posix()}`: {subjects} against "
        f"{ref_info.get('file_type') or reference.get('path')} (Gemma 3 270M), policy "
        f"`{report.policy}` (production plus `payoff` at severity warn), n_ctx "
        f"{options.get('n_ctx', '?')}, {len(datasets)} domains ({', '.join(map(str, datasets))}), "
        f"95 % bootstrap intervals over chunks; qgate {report.qgate_version}, "
        f"{machine.get('logical_cpus', '?')} CPUs ({machine.get('cpu') or machine.get('machine', '?')}), "
        f"{report.started_at[:10]}.\n"
    )


def quality_block(report: RunReport) -> str:
    domains = domains_of(report)
    rows = []
    for subject in ordered(report):
        ppl = find(subject, "perplexity", "ppl_delta")
        per_domain = [find(subject, "perplexity", f"ppl_delta[{d}]") for d in domains]
        kld = find(subject, "kl-divergence", "kld_mean")
        p99 = find(subject, "kl-divergence", "kld_p99")
        top1 = find(subject, "kl-divergence", "top1_agreement")
        rows.append(
            [
                label(subject),
                f"{float(subject.info.get('bits_per_weight') or 0):.2f}",
                (percent(ppl.value) + interval(ppl)) if ppl else "n/a",
                " / ".join(
                    percent(r.value, 1).removesuffix(" %") if r else "n/a" for r in per_domain
                )
                + " %",
                f"{kld.value:.4f}" if kld and kld.value is not None else "n/a",
                f"{p99.value:.3g}" if p99 and p99.value is not None else "n/a",
                percent(top1.value, 1, sign=False) if top1 else "n/a",
                f"**{subject.verdict.value}**",
            ]
        )
    columns = ["quant", "bpw", "PPL delta (all)", " / ".join(domains), "mean KLD", "p99 KLD"]
    return table([*columns, "top-1 agree", "verdict"], rows)


def domains_of(report: RunReport) -> list[str]:
    seen: dict[str, None] = {}
    for subject in report.subjects:
        for result in subject.results:
            match = re.fullmatch(r"ppl_delta\[(.+)\]", result.metric)
            if result.check_id == "perplexity" and match:
                seen.setdefault(match[1], None)
    return list(seen)


def checks_block(report: RunReport) -> str:
    subjects = ordered(report)
    checks: dict[str, None] = {}
    for subject in subjects:
        for result in subject.results:
            if result.check_id not in (*QUALITY_CHECKS, "payoff", "gate"):
                checks.setdefault(result.check_id, None)
    rows = [[check, *(check_cell(s, check) for s in subjects)] for check in checks]
    return table(["check", *(label(s) for s in subjects)], rows)


def check_cell(subject: SubjectReport, check: str) -> str:
    """The check's results on one subject: each metric's verdict and value, or why it did not
    measure."""
    results = [r for r in subject.results if r.check_id == check]
    if not results:
        return "not run"
    parts = []
    for result in results[:4]:
        name = result.metric or result.check_id
        if result.value is None:
            parts.append(f"{name} {result.verdict.value}")
            continue
        value = (
            percent(result.value, 1, sign=False) if result.unit == "%" else f"{result.value:.4g}"
        )
        parts.append(f"{name} {value} ({result.verdict.value})")
    if len(results) > 4:
        parts.append(f"{len(results) - 4} more")
    cell = "; ".join(parts)
    unmeasured = [r for r in results if r.value is None]
    if unmeasured:  # why, once: the message's longest clause ("the reference scores below ...")
        reason = max(unmeasured[0].message.split("; "), key=len)
        cell += f" ({shorten(reason, 80)})"
    return cell


def shorten(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def payoff_block(report: RunReport) -> str:
    subjects = ordered(report)
    metrics: dict[str, None] = {}
    for subject in subjects:
        for result in subject.results:
            if result.check_id == "payoff":
                metrics.setdefault(result.metric, None)
    rows = []
    for metric in metrics:
        cells = []
        for subject in subjects:
            result = find(subject, "payoff", metric)
            if result is None or result.value is None:
                cells.append("n/a")
                continue
            spread = interval(result, 1.0, 2)
            cells.append(f"{result.value:.3g}{spread} ({result.verdict.value})")
        rows.append([metric, *cells])
    return table(["subject / F16", *(label(s) for s in subjects)], rows)


def console_block(report: RunReport) -> str:
    from qgate.terminal import Terminal
    from qgate_reporters.console import ConsoleReporter

    text = ConsoleReporter().render_for(report, Terminal(width=CONSOLE_WIDTH))
    return "```text\n" + text.rstrip("\n") + "\n```\n"


def policies_block(report: RunReport | None) -> str:
    from qgate.cli.policy import policy_summary
    from qgate.plugins import Registry
    from qgate.policy import load_policy
    from qgate.policy.loader import available_policies, builtin_policy_dir

    registry = Registry.from_environment()
    lines = []
    for name, path in available_policies().items():
        if path.parent != builtin_policy_dir():
            continue
        loaded = load_policy(str(path), registry.check_objects())
        lines += [
            line for line in policy_summary(name, loaded, path) if not line.startswith("  file:")
        ]
        lines.append("")
    return "```text\n" + "\n".join(lines).rstrip("\n") + "\n```\n"


BLOCKS: dict[str, Callable[[RunReport], str]] = {
    "run": run_block,
    "quality": quality_block,
    "checks": checks_block,
    "console": console_block,
    "policies": policies_block,
    "payoff": payoff_block,
}


def render(report: RunReport | None) -> dict[str, str]:
    """Every block; without a recorded run (``None``) only the policies (made from the shipped
    policy files), the others empty: no figure is shown that no run produced."""
    if report is None:
        return {name: policies_block(None) if name == "policies" else "" for name in BLOCKS}
    return {name: make(report) for name, make in BLOCKS.items()}


def load_if_recorded(path: Path = RUN) -> RunReport | None:
    return load(path) if path.is_file() else None


def in_readme(text: str) -> dict[str, str]:
    """The generated blocks as README.md holds them."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def replaced(text: str, blocks: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m[1] + blocks.get(m["name"], m["body"]) + m[4], text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the blocks in README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md differs")
    parser.add_argument("--run", type=Path, default=RUN, help="the recorded run's JSON")
    args = parser.parse_args()
    blocks = render(load_if_recorded(args.run))
    text = README.read_text(encoding="utf-8")
    if args.write:
        README.write_text(replaced(text, blocks), encoding="utf-8")
        return 0
    if args.check:
        stale = [n for n, body in in_readme(text).items() if blocks.get(n) != body]
        print("README.md is up to date" if not stale else f"stale blocks: {', '.join(stale)}")
        return 1 if stale else 0
    for name, body in blocks.items():
        print(f"<!-- generated: {name} -->\n{body}<!-- /generated -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
