"""What the HTML report and the Markdown summary show first and how they draw it: the verdict
matrix, failing subjects and rows first, passing subjects folded, charts with padded and
logarithmic axes and labelled points, per-part interval bars, and a ladder without empty columns.
"""

from __future__ import annotations

import math
import re

from qgate.figures import Chart, Figures, Line
from qgate.results import CheckResult, Comparison, Interval, RunReport, SubjectReport, Verdict
from qgate_reporters import charts, html, intervals, ladder, matrix
from tests.test_reporters import make_report, parse_html


def result(
    check: str,
    metric: str,
    verdict: Verdict,
    value: float | None = None,
    *,
    interval: tuple[float, float] | None = None,
    threshold: float | None = None,
    unit: str = "",
    headlines: dict[str, float] | None = None,
) -> CheckResult:
    return CheckResult(
        check=check,
        check_id=check,
        metric=metric,
        verdict=verdict,
        message=f"{metric} {verdict.value}",
        value=value,
        threshold=threshold,
        comparison=Comparison.LE if threshold is not None else None,
        interval=Interval(*interval) if interval else None,
        unit=unit,
        headlines=headlines or {},
    )


def per_domain(verdict_ja: Verdict) -> list[CheckResult]:
    """Perplexity overall and on three domains, Japanese the worst, as the built-in check
    reports them (unit %)."""
    return [
        result("perplexity", "ppl_delta", Verdict.PASS, 0.0075, interval=(0.0047, 0.0104),
               threshold=0.01, unit="%", headlines={"ppl_delta": 0.0075}),
        result("perplexity", "ppl_delta[en]", Verdict.PASS, 0.002, interval=(0.0, 0.004),
               threshold=0.03, unit="%"),
        result("perplexity", "ppl_delta[code]", Verdict.PASS, 0.0001, interval=(-0.001, 0.001),
               threshold=0.03, unit="%"),
        result("perplexity", "ppl_delta[ja]", verdict_ja, 0.017, interval=(0.01, 0.024),
               threshold=0.03, unit="%"),
    ]  # fmt: skip


def subject(label: str, results: list[CheckResult], size: float | None = None) -> SubjectReport:
    info: dict[str, object] = {"label": label}
    if size is not None:
        info["file_size"] = size
    return SubjectReport(path=f"/m/{label}.gguf", backend="gguf", info=info, results=results)


def two_quants() -> RunReport:
    good = subject(
        "q8_0",
        [
            *per_domain(Verdict.PASS),
            result("kl-divergence", "kld_mean", Verdict.PASS, 0.006, threshold=0.02,
                   headlines={"kld_mean": 0.006}),
        ],
        278e6,
    )  # fmt: skip
    bad = subject(
        "q2_k",
        [
            result("perplexity", "ppl_delta", Verdict.FAIL, 1.32, interval=(1.17, 1.48),
                   threshold=0.01, unit="%", headlines={"ppl_delta": 1.32}),
            result("kl-divergence", "kld_mean", Verdict.FAIL, 0.84, threshold=0.02,
                   headlines={"kld_mean": 0.84}),
            result("quant-floor", "bits_per_weight", Verdict.PASS, 6.88),
        ],
        226e6,
    )  # fmt: skip
    return RunReport(policy="production", subjects=[good, bad])


# -- the verdict matrix --------------------------------------------------------------------------
def test_the_matrix_has_a_column_per_check_and_blocking_rows_first() -> None:
    view = matrix.verdict_matrix(two_quants())
    assert view.checks == ["perplexity", "kl-divergence", "quant-floor"]
    assert [row.label for row in view.rows] == ["q2_k", "q8_0"]
    q2, q8 = view.rows
    assert [c.verdict if c else None for c in q2.cells] == ["fail", "fail", "pass"]
    assert [c.verdict if c else None for c in q8.cells] == ["pass", "pass", None]
    assert q8.cells[0] is not None and q8.cells[0].results == 4  # overall and three domains
    mixed = matrix.cell(per_domain(Verdict.FAIL))
    assert mixed is not None and mixed.verdict == "fail" and mixed.worst == ["ppl_delta[ja]"]


def test_the_html_report_opens_with_the_matrix_and_folds_passing_subjects() -> None:
    text = html.HtmlReporter().render(two_quants())
    parse_html(text)
    assert text.index('<table class="matrix">') < text.index('<section id="s1">')
    matrix_html = text[text.index('<table class="matrix">') : text.index("</table>")]
    assert matrix_html.index("q2_k") < matrix_html.index("q8_0")
    assert '<td class="verdict cell v-fail" title="ppl_delta">fail</td>' in matrix_html
    assert 'title="not run on this subject">·</td>' in matrix_html  # q8_0 has no quant-floor
    # a narrow column per check (its name set upwards), the counts under the quant's name, and
    # a page too narrow for them all scrolls the matrix, not the report
    assert '<th class="mono check">perplexity</th>' in matrix_html
    assert '<span class="counts muted">' in matrix_html
    assert text.index('<div class="matrix-wrap">') < text.index('<table class="matrix">')
    # the failing subject's section first and open; the passing one folded
    assert text.index('<section id="s2">') < text.index('<section id="s1">')
    passing = text[text.index('<section id="s1">') :]
    assert passing.index('<details class="subject">') < passing.index("</section>")
    failing = text[text.index('<section id="s2">') : text.index('<section id="s1">')]
    assert '<details class="subject">' not in failing


def test_html_result_rows_are_worst_first() -> None:
    text = html.HtmlReporter().render(make_report())
    first = text[text.index('<table class="results">') :]
    first = first[: first.index("</table>")]
    verdicts = re.findall(r'<tr id="s1-r\d+"><td class="verdict v-(\w+)"', first)
    assert verdicts == ["error", "fail", "fail", "warn", "pass", "skip"]


# -- interval bars -------------------------------------------------------------------------------
def test_parts_of_one_metric_form_a_group_with_the_overall_value_first() -> None:
    results = [*per_domain(Verdict.WARN), result("other", "x[only]", Verdict.PASS, 1.0)]
    groups = intervals.part_groups(results)
    assert [(metric, [part for part, _ in members]) for metric, members in groups] == [
        ("ppl_delta", ["all", "en", "code", "ja"])
    ]  # a metric measured on one part only is no group
    nan = [result("c", "m[a]", Verdict.ERROR, math.nan), result("c", "m[b]", Verdict.PASS, 1.0)]
    assert intervals.part_groups(nan) == []  # nothing to draw for a NaN


def test_interval_bars_put_the_dot_inside_its_bar_and_mark_a_shared_limit() -> None:
    members = intervals.part_groups(per_domain(Verdict.WARN))[0][1][1:]  # the domains
    view = intervals.interval_chart("ppl_delta", members)
    assert [bar.label for bar in view.bars] == ["en", "code", "ja"]
    assert view.x_label == "ppl_delta (%)"
    for bar in view.bars:
        assert float(bar.low) <= float(bar.dot) <= float(bar.high)
        assert view.left <= float(bar.low) and float(bar.high) <= view.right
    ja = view.bars[2]
    assert ja.colour == intervals.VERDICT_COLOURS["warn"] and ja.value == "1.7%"
    assert view.threshold and view.threshold_label == "limit <= 3"
    assert float(ja.dot) < float(view.threshold)  # 1.7 % sits left of the 3 % limit
    assert float(view.bars[1].dot) < float(ja.dot)


def test_the_html_report_draws_interval_bars_for_per_domain_results() -> None:
    text = html.HtmlReporter().render(two_quants())
    parsed = parse_html(text)
    assert text.count('<svg class="intervals"') == 1  # q8_0's domains; q2_k has no parts
    assert "ppl_delta by part" in "".join(parsed.text)


# -- charts --------------------------------------------------------------------------------------
def test_an_axis_spanning_a_factor_of_ten_is_logarithmic() -> None:
    kld = charts.Axis.numeric([0.0062, 0.836])
    assert kld.log and kld.low == 0.001 and kld.high == 1.0
    assert {0.001, 0.01, 0.1, 1.0} <= set(kld.ticks) and 0.002 in kld.ticks
    assert 0 < kld.fraction(0.0062) < kld.fraction(0.836) < 1
    assert math.isclose(kld.fraction(0.01) - kld.fraction(0.001), 1 / 3)
    assert not charts.Axis.numeric([226.1, 517.7]).log  # file sizes: linear
    assert not charts.Axis.numeric([-1.0, 50.0]).log  # not all positive


def test_a_linear_axis_is_padded_and_stays_non_negative_for_non_negative_data() -> None:
    axis = charts.Axis.numeric([0.0, 0.5, 1.0])
    assert axis.low == 0.0 and axis.fraction(1.0) < 1.0  # room above the highest point
    negative = charts.Axis.numeric([-0.2, 0.4])
    assert negative.low < -0.2 and negative.high > 0.4


def test_a_chart_says_when_an_axis_is_logarithmic() -> None:
    chart = charts.build_chart(
        Chart("KLD", "position", "mean KLD", [Line("Q8_0", [256, 768, 1536, 3072], [0.003, 0.003, 0.004, 0.004]), Line("Q2_K", [256, 768, 1536, 3072], [0.5, 0.6, 0.7, 0.7])])
    )  # fmt: skip
    assert chart.y_label == "mean KLD (log scale)" and chart.x_label == "position (log scale)"
    assert [t.label for t in chart.y_ticks][:3] == ["0.001", "0.002", "0.005"]


def test_lone_points_are_labelled_with_their_line_name() -> None:
    long = "Qwen2.5-Coder-0.5B-Instruct-Q8_0"
    lines = [Line(long, [278.0], [0.006]), Line("q2_k", [226.0], [0.84])]
    chart = charts.build_chart(Chart("KLD vs size", "MiB", "KLD", lines))
    labels = [label for line in chart.lines for label in line.labels]
    assert [label.text for label in labels] == [long, "q2_k"]
    right, left = labels  # the larger file, near the right edge: its long name goes left
    assert right.anchor == "end" and float(right.x) < float(chart.lines[0].markers[0].x)
    assert left.anchor == "start" and float(left.x) > float(chart.lines[1].markers[0].x)
    text = html.HtmlReporter().render(two_quants())
    assert re.search(r'<text class="point-label" [^>]*>q2_k</text>', text)


# -- the ladder ----------------------------------------------------------------------------------
def test_the_ladder_table_has_no_empty_columns_when_payoff_did_not_run() -> None:
    without = ladder.quant_ladder(two_quants())
    assert without is not None
    assert "generation tok/s" not in without.table().columns
    assert (
        "mean KLD" in without.table().columns and "bits per weight" not in without.table().columns
    )
    timed = two_quants()
    timed.subjects[0].results.append(
        result("payoff", "generation_speedup", Verdict.PASS, 1.3,
               headlines={"generation_tok_s": 39.0, "generation_speedup": 1.31})
    )  # fmt: skip
    with_speed = ladder.quant_ladder(timed)
    assert with_speed is not None
    columns = with_speed.table().columns
    assert "generation tok/s" in columns and "generation speedup" in columns
    speeds = [row[columns.index("generation tok/s")] for row in with_speed.table().rows]
    assert speeds == ["39", ""]  # a rung that was not timed keeps its empty cell


def test_figures_of_a_result_still_render_beside_the_new_views() -> None:
    report = two_quants()
    report.subjects[1].results[0].figures = Figures(
        charts=[Chart("by position", "tokens", "KLD", [Line("q2_k", [0, 1], [0.5, 0.6])])]
    )
    text = html.HtmlReporter().render(report)
    parse_html(text)
    assert "by position" in text and '<svg class="chart"' in text


def test_rows_with_different_limits_each_get_their_own_mark() -> None:
    members = intervals.part_groups(per_domain(Verdict.PASS))[0][1]  # all (1 %) and domains (3 %)
    view = intervals.interval_chart("ppl_delta", members)
    assert view.threshold == "" and view.threshold_label == ""
    limits = [float(bar.limit) for bar in view.bars]
    assert limits[0] < limits[1] == limits[2] == limits[3]  # 1 % left of 3 %
    text = html.HtmlReporter().render(two_quants())
    assert text.count('<line class="limit"') == 4  # q8_0's four rows
