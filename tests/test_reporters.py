"""Tests for the built-in reporters (console, json, junit, html, markdown).

Reports are built by hand: several subjects, every verdict, intervals, a NaN value, details with
tables / series / samples / a traceback, unicode, and hostile strings a model file could carry.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pluggy
import pytest

from qgate import hookspecs
from qgate.figures import Chart, Figures
from qgate.results import (
    VERDICT_ORDER,
    CheckResult,
    Comparison,
    Interval,
    RunReport,
    Severity,
    SubjectReport,
    Verdict,
)
from qgate.terminal import Terminal
from qgate_reporters import charts, console, html, json_report, junit, markdown

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE = f"{SCRIPT}{IMG}"
CONTROL = "bad\x00byte\x1b[31mred"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# fixtures


def _result(
    check_id: str,
    metric: str,
    verdict: Verdict,
    message: str,
    *,
    value: float | None = None,
    threshold: float | None = None,
    comparison: Comparison | None = Comparison.LE,
    interval: Interval | None = None,
    unit: str = "",
    details: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    duration_s: float = 0.5,
    severity: Severity = Severity.FAIL,
) -> CheckResult:
    return CheckResult(
        check=check_id,
        check_id=check_id,
        metric=metric,
        verdict=verdict,
        message=message,
        value=value,
        threshold=threshold,
        comparison=comparison if threshold is not None else None,
        interval=interval,
        unit=unit,
        severity=severity,
        figures=Figures.from_dict(figures),
        details=details or {},
        duration_s=duration_s,
    )


SERIES = {
    "title": f"KLD by position {SCRIPT}",
    "x_label": "token position",
    "y_label": "mean KLD",
    "lines": [
        {"name": "Q4_K_M", "x": [0, 512, 1024, 2048, 4096], "y": [0.01, 0.02, None, 0.04, 0.05]},
        {"name": f"Q2_K {IMG}", "x": [0, 512, 1024], "y": [0.2, float("nan"), 0.5]},
        {"name": "single", "x": [100], "y": [0.3]},
        {"name": "empty", "x": [], "y": []},
    ],
}

TABLE = {
    "title": f"per-domain {SCRIPT}",
    "columns": ["domain", "ppl ratio", "tokens"],
    "rows": [["prose", 1.0142, 2048], ["code|x", float("nan"), 512], [IMG, None, 0]],
}

SAMPLE = {
    "prompt": f"Say hi {SCRIPT}",
    "subject": f"hi hi hi hi {IMG}",
    "reference": "Hello! 你好",
    "note": "subject loops",
}


def subject_a() -> SubjectReport:
    """Every verdict, a NaN value, and details of every kind."""
    return SubjectReport(
        path="/models/llama-Q4_K_M.gguf",
        backend="gguf",
        info={
            "label": "llama-Q4_K_M",
            "format": "gguf",
            "architecture": "llama",
            "parameter_count": 8_030_261_248,
            "bits_per_weight": 4.89,
            "file_type": "MOSTLY_Q4_K_M",
            "file_size": 4_920_000_000,
            "tensor_types": {"q4_K": 193, "q6_K": 33, "f32": 65},
            "identity": {"general.name": f"Llama {SCRIPT}", "general.finetune": IMG},
            "tokenizer_hash": "abc123",
        },
        results=[
            _result(
                "perplexity",
                "ppl_ratio",
                Verdict.PASS,
                "ppl_ratio within limit",
                value=1.0142,
                threshold=1.02,
                interval=Interval(1.0100, 1.0180),
                figures={"tables": [TABLE]},
                duration_s=12.25,
            ),
            _result(
                "kl-divergence",
                "kld_p99",
                Verdict.FAIL,
                f"kld_p99 too high\nsecond line {SCRIPT}",
                value=0.98,
                threshold=0.5,
                interval=Interval(0.91, 1.05),
                figures={"charts": [SERIES]},
            ),
            _result(
                "kl-divergence",
                "top1_agreement",
                Verdict.WARN,
                "top-1 agreement is low",
                value=0.751,
                threshold=0.8,
                comparison=Comparison.GE,
                unit="%",
                severity=Severity.WARN,
            ),
            _result(
                "generation",
                "",
                Verdict.SKIP,
                "needs a reference model (--reference)",
                figures={"samples": [SAMPLE]},
            ),
            _result(
                "long-context",
                "",
                Verdict.ERROR,
                "the check raised ValueError: boom",
                details={"traceback": f"Traceback (most recent call last):\n {SCRIPT}\nValueError"},
            ),
            _result(
                "perplexity",
                "ppl_ratio[code]",
                Verdict.FAIL,
                "ppl is NaN",
                value=float("nan"),
                threshold=1.02,
                interval=Interval(float("nan"), float("inf")),
            ),
        ],
    )


def subject_b() -> SubjectReport:
    """Unicode, a hostile label, pipes and control characters in model-provided strings."""
    return SubjectReport(
        path="/models/模型 a|b/Zażółć-Q2_K.gguf",
        backend="gguf",
        info={
            "label": f"模型 Q2_K a|b {HOSTILE}",
            "architecture": "qwen2",
            "bits_per_weight": 2.96,
        },
        results=[
            _result(
                "quant-floor",
                "",
                Verdict.PASS,
                f"all tensors ≥ q2_K ✓ | {CONTROL}",
                value=2.96,
                threshold=2.5,
                comparison=Comparison.GE,
            ),
            _result(
                "perplexity",
                "ppl_ratio",
                Verdict.FAIL,
                f"{HOSTILE} | pipes & <b>tags</b>",
                value=1.565,
                threshold=1.02,
                interval=Interval(1.50, 1.62, level=0.9),
            ),
        ],
    )


def subject_empty() -> SubjectReport:
    return SubjectReport(path="/models/empty.gguf", backend="gguf", info={})


def make_report(*, incomplete: bool = False) -> RunReport:
    return RunReport(
        policy="release-4bit",
        subjects=[subject_a(), subject_b(), subject_empty()],
        reference={
            "path": "/models/llama-F16.gguf",
            "backend": "gguf",
            "info": {"label": "llama-F16", "format": "gguf", "architecture": "llama"},
        },
        incomplete=incomplete,
        started_at="2025-01-01T10:00:00+00:00",
        finished_at="2025-01-01T10:05:00+00:00",
        qgate_version="0.1.0",
        counters={"model_loads": 3, "scoring_passes": 2, "reference_cache_hits": 1},
        timings={"load": 1.5, "score": 30.25},
        environment={"command": f"qgate check {SCRIPT}", "python": "3.11"},
    )


@pytest.fixture
def report() -> RunReport:
    return make_report()


def roundtripped(report: RunReport) -> RunReport:
    """The report as ``qgate report`` sees it: re-read from JSON (NaN values become strings)."""
    return RunReport.from_dict(json.loads(json_report.JsonReporter().render(report)))


# --------------------------------------------------------------------------------------------
# plugin registration


MODULES = {
    "console": (console, False),
    "json": (json_report, True),
    "junit": (junit, True),
    "html": (html, True),
    "markdown": (markdown, True),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_hook_returns_the_named_reporter(name: str) -> None:
    module, writes_file = MODULES[name]
    reporters = module.qgate_reporters()
    assert len(reporters) == 1
    assert reporters[0].name == name
    assert reporters[0].writes_file is writes_file


def test_reporters_register_through_pluggy() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module, _ in MODULES.values():
        pm.register(module)
    names = sorted(r.name for group in pm.hook.qgate_reporters() for r in group)
    assert names == sorted(MODULES)


def test_entry_points_name_these_modules() -> None:
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = data["project"]["entry-points"]["qgate"]
    for name, (module, _) in MODULES.items():
        assert entry_points[name] == module.__name__
    assert (REPO / "plugins" / "qgate_reporters" / "templates" / "report.html.j2").is_file()


# --------------------------------------------------------------------------------------------
# json


def test_json_round_trips(report: RunReport) -> None:
    text = json_report.JsonReporter().render(report)
    assert text.endswith("\n")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert RunReport.from_dict(data).to_dict() == data
    assert data["subjects"][0]["results"][5]["value"] == "nan"
    # to_dict leaves a NaN interval bound as a float; the reporter writes it as a string
    assert data["subjects"][0]["results"][5]["interval"] == {
        "low": "nan",
        "high": "inf",
        "level": 0.95,
    }
    assert "模型" in text  # ensure_ascii=False keeps unicode readable


def test_json_round_trip_equals_to_dict_for_finite_values() -> None:
    report = RunReport(
        policy="p",
        subjects=[subject_b()],
        qgate_version="0.1.0",
        counters={"model_loads": 1},
        timings={"load": 0.25},
    )
    text = json_report.JsonReporter().render(report)
    assert RunReport.from_dict(json.loads(text)).to_dict() == report.to_dict()


def test_json_of_a_round_tripped_report_is_stable(report: RunReport) -> None:
    reporter = json_report.JsonReporter()
    first = reporter.render(report)
    assert reporter.render(roundtripped(report)) == first


def test_json_write_is_atomic(report: RunReport, tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.json"
    json_report.JsonReporter().write(report, target)
    assert json.loads(target.read_text(encoding="utf-8"))["verdict"] == "error"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


# --------------------------------------------------------------------------------------------
# junit


def assert_junit_structure(root: ET.Element) -> None:
    """The JUnit shape Jenkins and GitHub test-report actions read."""
    assert root.tag == "testsuites"
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in root:
        assert suite.tag == "testsuite"
        for attr in ("name", "tests", "failures", "errors"):
            assert attr in suite.attrib, f"testsuite lacks {attr}"
        assert suite.get("name")
        cases = suite.findall("testcase")
        assert {child.tag for child in suite} <= {
            "properties",
            "testcase",
            "system-out",
            "system-err",
        }
        counted = {"failures": 0, "errors": 0, "skipped": 0}
        for case in cases:
            assert case.get("name"), "testcase lacks name"
            assert case.get("classname"), "testcase lacks classname"
            if case.get("time") is not None:
                assert float(case.get("time", "")) >= 0
            tags = [child.tag for child in case]
            assert set(tags) <= {"failure", "error", "skipped", "system-out", "system-err"}
            outcome = [t for t in tags if t in ("failure", "error", "skipped")]
            assert len(outcome) <= 1, f"testcase {case.get('name')} has {outcome}"
            for tag, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                if tag in outcome:
                    counted[key] += 1
                    if tag != "skipped":
                        assert case.find(tag).get("message")  # type: ignore[union-attr]
        assert int(suite.get("tests", "-1")) == len(cases)
        assert int(suite.get("failures", "-1")) == counted["failures"]
        assert int(suite.get("errors", "-1")) == counted["errors"]
        assert int(suite.get("skipped", "0")) == counted["skipped"]
        for prop in suite.iter("property"):
            assert prop.get("name") is not None and prop.get("value") is not None
        totals["tests"] += len(cases)
        totals["failures"] += counted["failures"]
        totals["errors"] += counted["errors"]
    for key, value in totals.items():
        assert int(root.get(key, "-1")) == value


def parse_junit(report: RunReport) -> ET.Element:
    text = junit.JUnitReporter().render(report)
    return ET.fromstring(text.encode("utf-8"))


def test_junit_suites_and_counts(report: RunReport) -> None:
    root = parse_junit(report)
    assert_junit_structure(root)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [s.label for s in report.subjects]
    for suite, subject in zip(suites, report.subjects, strict=True):
        verdicts = [r.verdict for r in subject.results]
        assert int(suite.get("tests", "")) == len(verdicts)
        assert int(suite.get("failures", "")) == verdicts.count(Verdict.FAIL)
        assert int(suite.get("errors", "")) == verdicts.count(Verdict.ERROR)
        assert int(suite.get("skipped", "")) == verdicts.count(Verdict.SKIP)
        names = [c.get("name") for c in suite.findall("testcase")]
        assert names == [r.name for r in subject.results]
        assert {c.get("classname") for c in suite.findall("testcase")} <= {f"qgate.{subject.label}"}
    assert root.get("tests") == "8" and root.get("failures") == "3" and root.get("errors") == "1"


def test_junit_failure_carries_value_and_threshold(report: RunReport) -> None:
    root = parse_junit(report)
    case = root.find("testsuite/testcase[@name='kl-divergence.kld_p99']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert "0.9800" in message and "<= 0.5000" in message
    assert "[0.9100, 1.0500]" in message
    assert "kld_p99 too high" in (failure.text or "")
    assert "interval: [0.9100, 1.0500] 95%" in (failure.text or "")
    nan_case = root.find("testsuite/testcase[@name='perplexity.ppl_ratio[code]']/failure")
    assert nan_case is not None and "nan" in nan_case.get("message", "")


def test_junit_error_skip_warn_and_pass_cases(report: RunReport) -> None:
    suite = parse_junit(report).find("testsuite")
    assert suite is not None
    error = suite.find("testcase[@name='long-context']/error")
    assert error is not None and "ValueError: boom" in error.get("message", "")
    assert "Traceback" in (error.text or "")
    skipped = suite.find("testcase[@name='generation']/skipped")
    assert skipped is not None and "needs a reference" in skipped.get("message", "")
    warn = suite.find("testcase[@name='kl-divergence.top1_agreement']")
    assert warn is not None
    assert warn.find("failure") is None and warn.find("error") is None
    assert "WARNING: top-1 agreement is low" in (warn.findtext("system-out") or "")
    passed = suite.find("testcase[@name='perplexity.ppl_ratio']")
    assert passed is not None and len(passed.findall("failure")) == 0
    assert float(passed.get("time", "0")) == pytest.approx(12.25)


def test_junit_metrics_as_properties_and_system_out(report: RunReport) -> None:
    suite = parse_junit(report).find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["path"] == "/models/llama-Q4_K_M.gguf"
    assert props["backend"] == "gguf"
    assert props["architecture"] == "llama"
    assert props["bits_per_weight"] == "4.89"
    assert props["file_type"] == "MOSTLY_Q4_K_M"
    assert props["perplexity.ppl_ratio.value"] == "1.0142"
    assert props["perplexity.ppl_ratio.threshold"] == "<= 1.0200"
    assert props["kl-divergence.top1_agreement.value"] == "75.10%"
    out = suite.findtext("testcase[@name='perplexity.ppl_ratio']/system-out") or ""
    lines = out.splitlines()
    assert "value=1.0142" in lines and "threshold=1.0200" in lines
    assert "interval_low=1.0100" in lines and "comparison=<=" in lines


def test_junit_incomplete_run_adds_an_error_case() -> None:
    root = parse_junit(make_report(incomplete=True))
    assert_junit_structure(root)
    suite = root.find("testsuite[@name='qgate']")
    assert suite is not None
    case = suite.find("testcase[@name='qgate.incomplete']")
    assert case is not None and case.find("error") is not None
    assert "interrupted" in case.find("error").get("message", "")  # type: ignore[union-attr]
    assert parse_junit(make_report()).find("testsuite[@name='qgate']") is None


def test_junit_strips_characters_illegal_in_xml(report: RunReport) -> None:
    report.subjects[1].results[0].message += " lone \ud800 surrogate \x0b\x7f"
    report.subjects[1].info["label"] = "lab\x00el\x1b"
    text = junit.JUnitReporter().render(report)
    for char in ("\x00", "\x1b", "\x0b", "\ud800"):
        assert char not in text
    root = ET.fromstring(text.encode("utf-8"))
    assert_junit_structure(root)
    assert root.find("testsuite[@name='label']") is not None
    out = root.findtext("testsuite[@name='label']/testcase[@name='quant-floor']/system-out") or ""
    assert "badbyte[31mred" in out and "✓" in out


def test_junit_escapes_hostile_strings(report: RunReport) -> None:
    text = junit.JUnitReporter().render(report)
    assert "<script" not in text and "<img" not in text
    root = ET.fromstring(text.encode("utf-8"))
    label = report.subjects[1].label
    suite = root.find("testsuite[2]")
    assert suite is not None and suite.get("name") == label  # escaped, then parsed back intact


def test_junit_renders_a_round_tripped_report(report: RunReport) -> None:
    root = ET.fromstring(junit.JUnitReporter().render(roundtripped(report)).encode("utf-8"))
    assert_junit_structure(root)
    assert root.get("failures") == "3"


def test_xml_text_keeps_legal_unicode() -> None:
    assert junit.xml_text("a\tb\nc\r😀 模型\x00\x1b\ufffe") == "a\tb\nc\r😀 模型"


# --------------------------------------------------------------------------------------------
# html


VOID = {
    "meta",
    "br",
    "hr",
    "img",
    "input",
    "link",
    "area",
    "base",
    "col",
    "embed",
    "source",
    "track",
    "wbr",
}
#: SVG elements written as <x ...></x> or <x/>; both are fine to the HTML parser
SELF_CLOSABLE = {"circle", "line", "polyline", "path", "rect"}


class StrictHTML(HTMLParser):
    """Records tags and attributes, and checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, name, value) for name, value in attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, name, value) for name, value in attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.doctype
    assert parser.errors == []
    assert parser.stack == []
    return parser


def test_html_is_well_formed_and_self_contained(report: RunReport) -> None:
    text = html.HtmlReporter().render(report)
    parsed = parse_html(text)
    assert "<script" not in text.lower()
    assert "script" not in parsed.tags
    assert not {"link", "iframe", "object", "embed", "img"} & set(parsed.tags)
    for tag, name, value in parsed.attrs:
        assert not name.startswith("on"), f"event handler {name} on <{tag}>"
        if name in ("src", "href", "xlink:href"):
            assert value is not None and value.startswith("#"), f"<{tag} {name}={value!r}>"
        assert "http://" not in (value or "") and "https://" not in (value or "")
    assert "@import" not in text and "url(" not in text


def test_html_escapes_hostile_strings(report: RunReport) -> None:
    text = html.HtmlReporter().render(report)
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    parsed = parse_html(text)
    page_text = "".join(parsed.text)
    # label, identity field, message, sample, table cell, series title, environment
    assert page_text.count(SCRIPT) >= 7
    assert IMG in page_text


def test_html_contents(report: RunReport) -> None:
    text = html.HtmlReporter().render(report)
    parsed = parse_html(text)
    page_text = "".join(parsed.text)
    assert "<title>qgate: ERROR (release-4bit)</title>" in text
    assert "llama-Q4_K_M" in page_text and "模型 Q2_K a|b" in page_text
    # facts and tensor-type histogram
    assert "8.03B (8,030,261,248)" in page_text and "4.890" in page_text
    assert "MOSTLY_Q4_K_M" in page_text and "q4_K" in page_text and "66.3%" in page_text
    assert "general.finetune" in page_text
    # results table: one row per result, verdict-coloured cells
    for verdict in ("pass", "fail", "warn", "skip", "error"):
        assert f'class="verdict v-{verdict}"' in text
    assert parsed.tags.count("tr") >= 8
    # details: table, samples, traceback
    assert "per-domain" in page_text and "code|x" in page_text
    assert "Hello! 你好" in page_text and parsed.tags.count("pre") >= 4
    assert "<details><summary>Traceback</summary>" in text
    # footer
    assert "model loads: 3" in page_text and "reference cache hits: 1" in page_text
    assert "2025-01-01T10:05:00+00:00" in page_text and "30.25 s" in page_text
    assert "INCOMPLETE RUN" not in page_text


def test_html_svg_for_series(report: RunReport) -> None:
    text = html.HtmlReporter().render(report)
    parsed = parse_html(text)
    assert parsed.tags.count("svg") == 1
    assert parsed.tags.count("polyline") >= 2
    assert "KLD by position" in "".join(parsed.text)
    # no series anywhere -> no svg
    for subject in report.subjects:
        for result in subject.results:
            result.figures.charts.clear()
    assert "<svg" not in html.HtmlReporter().render(report)


def test_html_incomplete_banner() -> None:
    text = html.HtmlReporter().render(make_report(incomplete=True))
    assert 'class="banner"' in text and "INCOMPLETE RUN" in text


def test_html_renders_round_tripped_and_empty_reports(report: RunReport) -> None:
    again = html.HtmlReporter().render(roundtripped(report))
    parse_html(again)
    assert "<svg" in again
    empty = html.HtmlReporter().render(RunReport(policy="p"))
    parsed = parse_html(empty)
    assert "qgate: SKIP" in "".join(parsed.text)


def test_html_tolerates_malformed_details(report: RunReport) -> None:
    report.subjects[0].results[0].figures = Figures.from_dict(
        {
            "tables": ["not a table", {"rows": [[1, 2, 3], "x"]}, {"columns": ["a"]}],
            "charts": [{"lines": "nope"}, {"title": "t", "lines": [{"name": "n", "y": [1, 2]}]}, 3],
            "samples": [None, {"prompt": 5}],
        }
    )
    text = html.HtmlReporter().render(report)
    parse_html(text)
    # the two series dicts here (one without lines) and the one on kld_p99
    assert text.count("<svg") == 3
    assert "no data" in text


def test_template_environment_is_strict_and_autoescaped() -> None:
    env = html.template_environment()
    assert env.undefined is jinja2.StrictUndefined
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert env.autoescape is True
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing.attr }}").render()


# --------------------------------------------------------------------------------------------
# charts


def build_chart(data: dict[str, Any]) -> charts.ChartView:
    """A chart's geometry from the JSON shape results carry it in."""
    return charts.build_chart(Chart.from_dict(data))


def test_chart_skips_nan_and_none_and_splits_lines() -> None:
    chart = build_chart(SERIES)
    q4, q2, single, empty = chart.lines
    # None at index 2 splits Q4 into [0, 512] and [2048, 4096]
    assert len(q4.segments) == 2
    assert all(len(seg.split()) == 2 for seg in q4.segments)
    assert len(q4.markers) == 4
    # NaN in the middle leaves two lone points: no polyline, two dots
    assert q2.segments == [] and len(q2.markers) == 2
    assert single.segments == [] and len(single.markers) == 1
    assert empty.empty and empty.segments == [] and empty.markers == []
    assert [item.empty for item in chart.legend] == [False, False, False, True]
    for line in chart.lines:
        for marker in line.markers:
            x, y = float(marker.x), float(marker.y)
            assert chart.left <= x <= chart.right and chart.top <= y <= chart.bottom
    assert chart.note == ""


def test_chart_flat_and_empty_series() -> None:
    flat = build_chart({"lines": [{"name": "a", "x": [1, 2, 3], "y": [0.5, 0.5, 0.5]}]})
    ticks = [float(t.label) for t in flat.y_ticks]
    assert min(ticks) < 0.5 < max(ticks)
    ys = {m.y for m in flat.lines[0].markers}
    assert len(ys) == 1 and flat.top < float(ys.pop()) < flat.bottom
    one = build_chart({"lines": [{"name": "a", "x": [7], "y": [0.0]}]})
    assert len(one.lines[0].markers) == 1 and one.x_ticks
    nothing = build_chart({"title": "t", "lines": [{"name": "a", "x": [1], "y": [None]}]})
    assert nothing.note == "no data" and nothing.y_ticks == [] and nothing.lines[0].empty
    assert build_chart({}).note == "no data"


def test_chart_categorical_x_and_nice_ticks() -> None:
    chart = build_chart(
        {"lines": [{"name": "d", "x": ["0-1k", "1k-2k", "2k-4k"], "y": [0.1, 0.2, 0.4]}]}
    )
    assert [t.label for t in chart.x_ticks] == ["0-1k", "1k-2k", "2k-4k"]
    assert len(chart.lines[0].segments) == 1
    low, high, ticks = charts.nice_ticks(0.013, 0.97)
    assert low <= 0.013 and high >= 0.97 and 3 <= len(ticks) <= 12
    assert all(math.isclose(b - a, ticks[1] - ticks[0]) for a, b in itertools.pairwise(ticks))
    assert charts.nice_step(0) == 1.0


# --------------------------------------------------------------------------------------------
# markdown

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def table_rows(text: str) -> list[list[str]]:
    """Body rows of every Markdown table, split on unescaped pipes."""
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            for row in lines[i + 1 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in _UNESCAPED_PIPE.split(row)[1:-1]])
    return rows


def test_markdown_headline_and_footer(report: RunReport) -> None:
    text = markdown.MarkdownReporter().render(report)
    assert "**qgate: ERROR**" in text and "release\\-4bit" not in text
    assert "release-4bit" in text.splitlines()[2]
    footer = text.rstrip().splitlines()[-1]
    assert "qgate 0.1.0" in footer and "model loads: 3" in footer
    assert "scoring passes: 2" in footer and "reference cache hits: 1" in footer
    assert "run complete" in footer
    incomplete = markdown.MarkdownReporter().render(make_report(incomplete=True))
    assert "INCOMPLETE RUN" in incomplete and "run incomplete" in incomplete


def result_rows(text: str) -> list[list[str]]:
    """Body rows of the subjects' result tables (not the matrix, not the ladder)."""
    header = "| Check | Verdict | Value | Interval | Threshold | Message |"
    rows = []
    for block in text.split(header)[1:]:
        rows += table_rows(header + block)[: block.count("\n|") - 1]
    return rows


def test_markdown_one_row_per_result_failing_rows_first(report: RunReport) -> None:
    text = markdown.MarkdownReporter().render(report)
    rows = result_rows(text)
    order = list(VERDICT_ORDER)
    expected = [
        r for s in report.subjects for r in sorted(s.results, key=lambda r: order.index(r.verdict))
    ]
    assert len(rows) == len(expected)
    assert all(len(row) == 6 for row in rows)
    assert [row[1] for row in rows] == [f"**{r.verdict.value.upper()}**" for r in expected]
    assert text.count("| Check | Verdict | Value | Interval | Threshold | Message |") == 2
    assert "_No results._" in text  # the subject without results


def test_markdown_opens_with_the_verdict_matrix(report: RunReport) -> None:
    text = markdown.MarkdownReporter().render(report)
    matrix = text.index("| Quant | Verdict | perplexity |")
    assert matrix < text.index("### ")  # before any subject's table
    header = text[matrix:].splitlines()[0]
    assert header == (
        "| Quant | Verdict | perplexity | kl-divergence | generation | long-context | quant-floor |"
    )
    rows = table_rows(text[matrix:])[:3]
    assert rows[0][:3] == ["llama-Q4\\_K\\_M", "**🛑 ERROR**", "❌ FAIL"]
    assert rows[0][3:6] == ["❌ FAIL", "⏭️ SKIP", "🛑 ERROR"] and rows[0][6] == ""
    assert rows[1][1] == "**❌ FAIL**" and rows[1][2] == "❌ FAIL" and rows[1][6] == "✅ PASS"
    assert rows[2][1] == "**⏭️ SKIP**" and set(rows[2][2:]) == {""}


def test_markdown_folds_passing_subjects_and_puts_blocking_ones_first() -> None:
    passing = subject_empty()
    passing.path, passing.info = "/models/q8.gguf", {"label": "q8"}
    passing.results = [_result("perplexity", "ppl_ratio", Verdict.PASS, "fine", value=1.0)]
    failing = subject_b()
    text = markdown.MarkdownReporter().render(RunReport(policy="p", subjects=[passing, failing]))
    assert text.index("### 模型 Q2") < text.index("<details>")
    folded = text[text.index("<details>") : text.index("</details>")]
    assert "<summary><b>q8: ✅ PASS</b> (1 pass)</summary>" in folded
    assert "| perplexity.ppl\\_ratio | **PASS** |" in folded
    rows = table_rows(text[: text.index("### ")])  # the matrix: the failing subject first
    assert [row[0] for row in rows[:2]][1] == "q8" and rows[0][1] == "**❌ FAIL**"


def test_markdown_escapes_model_strings(report: RunReport) -> None:
    text = markdown.MarkdownReporter().render(report)
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a\\|b" in text  # label and path pipes
    assert "pipes &amp; &lt;b&gt;tags&lt;/b&gt;" in text
    rows = table_rows(text)
    fail_row = next(r for r in rows if r[0] == "kl\\-divergence.kld_p99" or "kld" in r[0])
    assert "second line" in fail_row[5]  # the newline became a space, the row is intact
    assert "\x00" not in text and "\x1b" not in text
    assert markdown.md_escape("a|b\nc<d>&[x](y)") == "a\\|b c&lt;d&gt;&amp;\\[x\\](y)"


def test_markdown_values_intervals_thresholds(report: RunReport) -> None:
    rows = result_rows(markdown.MarkdownReporter().render(report))
    by_name = {row[0]: row for row in rows[:6]}  # subject a: one row per metric
    assert by_name["perplexity.ppl\\_ratio"][2:5] == [
        "1.0142",
        "\\[1.0100, 1.0180\\] 95%",
        "&lt;= 1.0200",
    ]
    agreement = by_name["kl-divergence.top1\\_agreement"]
    assert agreement[2] == "75.10%" and agreement[4] == "&gt;= 80.00%"
    assert by_name["perplexity.ppl\\_ratio\\[code\\]"][2] == "nan"
    assert rows[6][3] == "\\[1.5000, 1.6200\\] 90%"  # subject b's failure before its pass


# --------------------------------------------------------------------------------------------
# console


def console_text(report: RunReport, **terminal: Any) -> str:
    return console.ConsoleReporter().render_for(report, Terminal(**terminal))


def test_console_table(report: RunReport) -> None:
    text = console.ConsoleReporter().render(report)
    lines = text.splitlines()
    assert all(console.text_width(line) <= console.LINE_WIDTH for line in lines)
    assert "\x1b" not in text and "\x00" not in text
    assert any(line.startswith("ERROR   llama-Q4_K_M  (gguf, /models/llama") for line in lines)
    for verdict in ("FAIL", "WARN", "SKIP", "ERROR"):
        assert any(line.lstrip().startswith(verdict) for line in lines)
    row = next(line for line in lines if "kl-divergence.kld_p99" in line)
    assert "0.9800 [0.9100, 1.0500] (limit <= 0.5000)" in row
    assert "(no results)" in text
    assert lines[-1] == (
        "qgate: ERROR (3 subjects: 1 error, 3 fail, 1 warn, 2 pass, 1 skip; "
        "4 of 6 fail-severity checks measured)"
    )
    assert "model loads: 3" in lines[-2]


def test_console_lists_failures_first_and_counts_the_passes(report: RunReport) -> None:
    lines = console.ConsoleReporter().render(report).splitlines()
    first = lines.index(next(line for line in lines if line.startswith("ERROR   llama")))
    verdicts = [line.split()[0] for line in lines[first + 2 : first + 7]]
    assert verdicts == ["ERROR", "FAIL", "FAIL", "WARN", "SKIP"]  # worst first
    assert lines[first + 7] == "  … and 1 pass (-v lists them)"
    assert "ppl_ratio within limit" not in "\n".join(lines)  # the passing row is not listed
    verbose = console_text(report, verbosity=1)
    assert "ppl_ratio within limit" in verbose and "-v lists" not in verbose


def test_console_quiet_keeps_only_what_blocks(report: RunReport) -> None:
    text = console_text(report, verbosity=-1)
    assert "WARN" not in text.replace("1 warn", "") and "top-1 agreement" not in text
    assert "kld_p99 too high" in text
    assert "SKIP    /models/empty.gguf  (gguf)  no results" in text  # its header, nothing more
    assert "(no results)" not in text
    assert "Quant ladder" not in text and "model loads" not in text
    assert text.splitlines()[-1].startswith("qgate: ERROR (3 subjects")


def test_console_fits_the_terminal_width(report: RunReport) -> None:
    report.subjects[0].results[1].message = "x" * 500
    report.subjects[1].results[1].message = "模" * 300
    for width in (60, 80, 200):
        out = console_text(report, width=width)
        assert all(console.text_width(line) <= width for line in out.splitlines()), width
    assert "…" in console_text(report, width=80) and "x" * 500 not in console_text(report)
    wide = console_text(report, width=600, verbosity=1)
    assert "x" * 500 in wide  # -v on a wide terminal: the whole message


def test_console_narrows_a_value_by_whole_parts_not_mid_word(report: RunReport) -> None:
    """A value column too narrow for value, interval and limit drops the limit (the message
    repeats it), then the interval; the message gets the columns the values left over."""

    def row(width: int) -> str:
        out = console_text(report, width=width)
        return next(line for line in out.splitlines() if "kld_p99 too high" in line)

    assert "0.9800 [0.9100, 1.0500] (limit <= 0.5000)  kld_p99" in row(200)
    assert "0.9800 [0.9100, 1.0500]   kld_p99" in row(100)  # the limit dropped, whole
    assert "  0.9800  kld_p99" in row(60)  # then the interval
    for width in (60, 80, 100):
        assert "(lim…" not in console_text(report, width=width)


def test_console_verbose_wraps_long_messages_instead_of_cutting_them(report: RunReport) -> None:
    report.subjects[0].results[1].message = " ".join(f"word{i}" for i in range(120))
    out = console_text(report, width=100, verbosity=1)
    assert all(console.text_width(line) <= 100 for line in out.splitlines())
    words = re.findall(r"word\d+…?", out)
    assert words == [f"word{i}" for i in range(120)]  # every word, none cut


def test_console_colours_verdicts_only_when_asked(report: RunReport) -> None:
    plain = console_text(report, colour=False)
    coloured = console_text(report, colour=True)
    assert "\x1b" not in plain
    assert "\x1b[31mFAIL   \x1b[0m" in coloured and "\x1b[1;31mERROR  \x1b[0m" in coloured
    assert "qgate: \x1b[1;31mERROR\x1b[0m (3 subjects" in coloured
    # a label's own escape codes are removed before qgate adds its colours
    report.subjects[1].info["label"] = "evil\x1b[2J\x1b]0;title\x07"
    text = console_text(report, colour=True)
    assert "\x1b[2J" not in text and "\x1b]0;" not in text and "evil" in text
    assert set(re.findall(r"\x1b\[[0-9;]*m", text)) <= {
        "\x1b[0m",
        "\x1b[31m",
        "\x1b[1;31m",
        "\x1b[33m",
        "\x1b[32m",
        "\x1b[2m",
    }


def test_console_truncates_wide_text(report: RunReport) -> None:
    text = console.ConsoleReporter().render(make_report(incomplete=True))
    assert all(console.text_width(line) <= console.LINE_WIDTH for line in text.splitlines())
    assert "INCOMPLETE" in text.splitlines()[-1]
    assert console.fit("模型abc", 4, pad=False) == "模…"
    assert console.text_width(console.fit("ab", 5)) == 5
    assert console.wrap("aaa bbb ccc", 7) == ["aaa bbb", "ccc"]
    assert console.wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_tick_labels_are_distinct_and_zero_is_zero() -> None:
    assert charts.tick_labels([-0.2, -0.1, 2.7e-17, 0.1]) == ["-0.2", "-0.1", "0", "0.1"]
    narrow = charts.nice_ticks(0.1, 0.1000000001)[2]
    labels = charts.tick_labels(narrow)
    assert len(set(labels)) == len(labels) == len(narrow)
