"""The ``junit`` reporter: JUnit XML, as Jenkins, GitLab and GitHub test-report actions read it.

One ``<testsuite>`` per subject, one ``<testcase>`` per result. ``fail`` becomes ``<failure>``,
``error`` becomes ``<error>``, ``skip`` becomes ``<skipped>``; a ``warn`` passes with the warning
in ``<system-out>``. JUnit has no properties on a test case, so each case's measurements go into
its ``<system-out>`` as ``key=value`` lines and into the suite's ``<properties>``.
"""

from __future__ import annotations

import re
from typing import Any

import junit_xml

from qgate.hookspecs import hookimpl
from qgate.reporter import Reporter
from qgate.results import CheckResult, RunReport, SubjectReport, Verdict
from qgate_reporters._common import (
    fmt,
    interval_text,
    one_line,
    threshold_text,
    truncate,
    value_summary,
    writes_any_text,
)

#: characters XML 1.0 does not allow at all (not even as character references)
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: subject info fields written as suite properties when present
INFO_PROPERTIES = ("architecture", "bits_per_weight", "file_type")
_MESSAGE_LIMIT = 300
INCOMPLETE_SUITE = "qgate"
INCOMPLETE_CASE = "qgate.incomplete"


def xml_text(value: Any) -> str:
    """``value`` as text with every character that XML 1.0 forbids removed."""
    return _XML_ILLEGAL.sub("", str(value))


def short_text(result: CheckResult) -> str:
    """``ppl_ratio = 1.0282 [1.0210, 1.0350] (limit <= 1.0100)`` for a failure's message."""
    summary = value_summary(result)
    if not summary:
        return truncate(one_line(result.message), _MESSAGE_LIMIT) or result.verdict.value
    return f"{one_line(result.metric or result.name)} = {summary}"


def metric_lines(result: CheckResult) -> list[str]:
    """The result's measurements as ``key=value`` lines (for ``<system-out>``)."""
    lines = [
        f"check={result.check}",
        f"check_id={result.check_id}",
        f"metric={result.metric}",
        f"verdict={result.verdict.value}",
        f"severity={result.severity.value}",
    ]
    if result.value is not None:
        lines.append(f"value={fmt(result.value, result.unit)}")
    if result.threshold is not None:
        lines.append(f"threshold={fmt(result.threshold, result.unit)}")
    if result.comparison is not None:
        lines.append(f"comparison={result.comparison.value}")
    if result.interval is not None:
        lines.append(f"interval_low={fmt(result.interval.low, result.unit)}")
        lines.append(f"interval_high={fmt(result.interval.high, result.unit)}")
        lines.append(f"interval_level={result.interval.level}")
    if result.unit:
        lines.append(f"unit={result.unit}")
    return lines


def metric_properties(result: CheckResult) -> dict[str, str]:
    """The measurements as suite-level properties, keyed ``<case name>.<field>``."""
    props: dict[str, str] = {}
    if result.value is not None:
        props[f"{result.name}.value"] = fmt(result.value, result.unit)
    if result.threshold is not None:
        props[f"{result.name}.threshold"] = threshold_text(result)
    if result.interval is not None:
        props[f"{result.name}.interval"] = interval_text(result.interval, result.unit, level=True)
    return props


def build_case(subject: SubjectReport, result: CheckResult) -> junit_xml.TestCase:
    """One result as a JUnit test case."""
    message = xml_text(result.message)
    metrics = "\n".join(metric_lines(result))
    full = message
    if result.interval is not None:
        full += f"\ninterval: {interval_text(result.interval, result.unit, level=True)}"
    traceback = result.details.get("traceback") if isinstance(result.details, dict) else None
    if traceback:
        full += f"\n\n{traceback}"
    full = xml_text(full)
    stdout = xml_text(metrics)
    if result.verdict is Verdict.WARN:
        stdout = xml_text(f"WARNING: {result.message}\n{metrics}")
    elif result.verdict is Verdict.PASS and message:
        stdout = xml_text(f"{result.message}\n{metrics}")
    case = junit_xml.TestCase(
        name=xml_text(result.name),
        classname=xml_text(f"qgate.{subject.label}"),
        elapsed_sec=float(result.duration_s or 0.0),
        stdout=stdout,
    )
    short = xml_text(truncate(one_line(message), _MESSAGE_LIMIT)) or result.verdict.value
    if result.verdict is Verdict.FAIL:
        case.add_failure_info(
            message=xml_text(short_text(result)), output=full, failure_type="qgate.fail"
        )
    elif result.verdict is Verdict.ERROR:
        case.add_error_info(message=short, output=full, error_type="qgate.error")
    elif result.verdict is Verdict.SKIP:
        case.add_skipped_info(message=short, output=full if full != short else None)
    return case


def build_suite(report: RunReport, subject: SubjectReport) -> junit_xml.TestSuite:
    """One subject as a JUnit test suite, its facts and measurements as properties."""
    props: dict[str, str] = {"path": subject.path, "backend": subject.backend}
    for key in INFO_PROPERTIES:
        if subject.info.get(key) is not None:
            props[key] = str(subject.info[key])
    props["verdict"] = subject.verdict.value
    props["measured"] = str(subject.coverage)  # a pass that measured little should show it
    props["policy"] = report.policy
    for result in subject.results:
        props.update(metric_properties(result))
    return junit_xml.TestSuite(
        name=xml_text(subject.label),
        test_cases=[build_case(subject, r) for r in subject.results],
        properties={xml_text(k): xml_text(v) for k, v in props.items()},
        timestamp=xml_text(report.started_at) or None,
    )


def incomplete_suite(report: RunReport) -> junit_xml.TestSuite:
    """An errored test case that makes an interrupted run visible (and red) in any CI."""
    case = junit_xml.TestCase(name=INCOMPLETE_CASE, classname="qgate", elapsed_sec=0.0)
    case.add_error_info(
        message="the qgate run was interrupted: results are incomplete",
        output=(
            "The run was interrupted or a subject could not be finished, so some checks "
            "never ran. A partial run cannot pass the gate."
        ),
        error_type="qgate.incomplete",
    )
    return junit_xml.TestSuite(
        name=INCOMPLETE_SUITE,
        test_cases=[case],
        properties={"policy": xml_text(report.policy)},
    )


class JUnitReporter(Reporter):
    """JUnit XML: a ``<testsuite>`` per subject, a ``<testcase>`` per result."""

    name = "junit"
    description = "JUnit XML for CI test-report views"
    writes_file = True

    @writes_any_text
    def render(self, report: RunReport) -> str:
        suites = [build_suite(report, s) for s in report.subjects]
        if report.incomplete:
            suites.append(incomplete_suite(report))
        text: str = junit_xml.to_xml_report_string(suites, prettyprint=True, encoding="utf-8")
        return text if text.endswith("\n") else text + "\n"


@hookimpl
def qgate_reporters() -> list[Reporter]:
    return [JUnitReporter()]
