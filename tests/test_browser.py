"""The HTML report in a real browser: headless Chromium loads it, runs whatever it would run,
and we look at the DOM it ends up with and at a screenshot of it.

The report is built from results whose labels, messages, samples, tables and chart titles carry
HTML and script payloads. A payload that executed would set ``document.title`` to ``pwned``;
a payload that was parsed as markup would leave an element or an ``on*`` attribute in the DOM.
A control page proves that scripts do run in this harness, and the report is loaded a second
time with its Content-Security-Policy removed, to show the escaping holds on its own.

Skipped, with the reason, when Chromium is not installed (``.ci/run`` installs it with apt).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from qgate.figures import Figures
from qgate.results import (
    CheckResult,
    Comparison,
    Interval,
    RunReport,
    Severity,
    SubjectReport,
    Verdict,
)
from qgate_reporters.html import HtmlReporter

CHROMIUM = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (found := shutil.which(name))
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (apt-get install chromium; .ci/run does this)",
)

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
SVG = "<svg onload=\"document.title='pwned'\"></svg>"
BREAKOUT = '" onmouseover="document.title=\'pwned\'" x="'
STYLE = "</style><script>document.title='pwned'</script>"
PAYLOADS = (SCRIPT, IMG, SVG, BREAKOUT, STYLE)
ALL = "".join(PAYLOADS)
#: the chart's second line colour (Okabe-Ito vermilion; the page uses it nowhere else)
CHART_LINE = (0xD5, 0x5E, 0x00)


def hostile_report() -> RunReport:
    series = {
        "title": f"KLD by position {SCRIPT}",
        "x_label": f"position {IMG}",
        "y_label": "mean KLD",
        "lines": [
            {"name": f"Q4_K_M {SVG}", "x": [0, 512, 1024, 2048, 4096], "y": [0.01, 0.02, 0.025, 0.04, 0.05]},
            {"name": f"Q2_K {BREAKOUT}", "x": [0, 512, 1024, 2048, 4096], "y": [0.2, 0.3, 0.5, 0.45, 0.6]},
        ],
    }  # fmt: skip
    results = [
        CheckResult(
            check="kl-divergence",
            check_id="kl-divergence",
            metric="kld_mean",
            verdict=Verdict.FAIL,
            message=f"mean KLD too high {SCRIPT}",
            value=0.31,
            threshold=0.05,
            comparison=Comparison.LE,
            interval=Interval(0.28, 0.35),
            figures=Figures.from_dict({"charts": [series]}),
        ),
        CheckResult(
            check="repetition",
            check_id="repetition",
            metric="collapse_increase",
            verdict=Verdict.FAIL,
            message=f"the subject loops {IMG}",
            value=0.5,
            threshold=0.05,
            comparison=Comparison.LE,
            unit="%",
            figures=Figures.from_dict(
                {
                    "samples": [
                        {
                            "prompt": f"Say hi {SCRIPT}",
                            "subject": f"hi hi hi hi {IMG} hi hi hi hi",
                            "reference": f"Hello! {SVG}",
                            "note": f"subject looping {BREAKOUT}",
                            "subject_highlight": [0, 12],
                        }
                    ],
                    "tables": [
                        {
                            "title": f"labels {STYLE}",
                            "columns": ["model", f"looping {SCRIPT}"],
                            "rows": [["subject", 15], [IMG, 0]],
                        }
                    ],
                }
            ),
        ),
        CheckResult(
            check="plugin",
            check_id="plugin",
            metric="",
            verdict=Verdict.ERROR,
            message=f"the check raised ValueError: {ALL}",
            severity=Severity.WARN,
            details={"traceback": f"Traceback (most recent call last):\n{ALL}\nValueError"},
        ),
    ]
    subject = SubjectReport(
        path=f"/models/{IMG}.gguf",
        backend="gguf",
        info={
            "label": f"model {SCRIPT}",
            "format": "gguf",
            "architecture": f"llama {BREAKOUT}",
            "bits_per_weight": 2.96,
            "tensor_types": {"q2_K": 150, f"q4_K {IMG}": 40, "f32": 65},
            "identity": {"name": f"Llama {SCRIPT}", "finetune": SVG},
        },
        results=results,
    )
    return RunReport(
        policy=f"prod {SCRIPT}",
        subjects=[subject],
        reference={"path": f"/models/{STYLE}.gguf", "backend": "gguf", "info": {}},
        environment={"command": f"qgate check {ALL}"},
    )


class DomFacts(HTMLParser):
    """What a DOM dump holds: its elements, attributes, the document title and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.title: str | None = None
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._stack[-1:] == ["title"] and "svg" not in self._stack and self.title is None:
            self.title = data

    @classmethod
    def of(cls, dom: str) -> DomFacts:
        facts = cls()
        facts.feed(dom)
        facts.close()
        return facts


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``page``, offline, with a throwaway profile."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def dump_dom(page: Path, profile: Path) -> str:
    dom = chromium(page, profile, "--dump-dom").stdout
    assert "</html>" in dom, dom[-2000:]
    return dom


def assert_nothing_ran_or_parsed(facts: DomFacts) -> None:
    # the title the report set, with the policy name's payload in it as text; never 'pwned'
    assert facts.title is not None and f"prod {SCRIPT}" in facts.title, facts.title
    assert not {"script", "img", "iframe", "object", "embed"} & set(facts.tags), set(facts.tags)
    handlers = [(t, n) for t, n, _ in facts.attributes if n.startswith("on")]
    assert not handlers  # no onload / onerror / onmouseover made it into an element
    assert not [a for a in facts.attributes if a[2].lstrip().lower().startswith("javascript:")]
    text = "".join(facts.text)
    for payload in PAYLOADS:
        assert payload in text, payload  # shown to the reader, as text


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("browser")
    page = directory / "report.html"
    page.write_text(HtmlReporter().render(hostile_report()), encoding="utf-8")
    return page


@needs_chromium
def test_the_harness_would_see_a_script_run(tmp_path):
    """Control: without the report's escaping and CSP, these payloads do run here."""
    page = tmp_path / "control.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><title>control</title></head><body>{IMG}</body></html>"
    )
    assert DomFacts.of(dump_dom(page, tmp_path / "profile")).title == "pwned"


@needs_chromium
def test_payloads_neither_run_nor_become_markup(rendered, tmp_path):
    facts = DomFacts.of(dump_dom(rendered, tmp_path / "profile"))
    assert_nothing_ran_or_parsed(facts)
    assert "polyline" in facts.tags and "svg" in facts.tags  # the chart is in the DOM


@needs_chromium
def test_escaping_alone_holds_without_the_csp(rendered, tmp_path):
    html = rendered.read_text(encoding="utf-8")
    csp = '<meta http-equiv="Content-Security-Policy"'
    assert csp in html
    bare = tmp_path / "no-csp.html"
    bare.write_text("\n".join(ln for ln in html.splitlines() if csp not in ln), encoding="utf-8")
    assert_nothing_ran_or_parsed(DomFacts.of(dump_dom(bare, tmp_path / "profile")))


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium writes) into an array of pixels,
    with the standard library's zlib: chunks, IDAT inflate, then the five scanline filters."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    raw = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = int(raw[y, 0]), raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: a running sum along the row, per channel
            row = (
                (np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint64) % 256)
                .astype(np.uint8)
                .reshape(stride)
            )
        elif kind == 2:  # Up
            row = line + prior
        else:  # Average, Paeth: sequential along the row
            row = _sequential(kind, line.tolist(), prior.tolist(), bpp)
        out[y] = row
        prior = row
    return out.reshape(height, width, bpp)[:, :, :3]


def _sequential(kind: int, line: list[int], prior: list[int], bpp: int) -> np.ndarray:
    row = [0] * len(line)
    for i, value in enumerate(line):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        if kind == 3:
            row[i] = (value + (a + b) // 2) & 0xFF
            continue
        c = prior[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
        row[i] = (value + predictor) & 0xFF
    return np.array(row, dtype=np.uint8)


@needs_chromium
def test_the_report_renders_with_a_chart(rendered, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(rendered, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000")
    if keep := os.environ.get("QGATE_KEEP_SCREENSHOT"):  # to look at it
        shutil.copyfile(shot, keep)
    pixels = read_png(shot)
    assert pixels.shape == (2000, 1200, 3)
    packed = (pixels.astype(np.uint32) << np.array([16, 8, 0], dtype=np.uint32)).sum(axis=2)
    colours, counts = np.unique(packed, return_counts=True)
    assert len(colours) > 50, len(colours)  # text, verdict badges, tables, a chart: not blank
    assert counts.max() < 0.97 * packed.size  # not one colour with a few specks
    line = (CHART_LINE[0] << 16) | (CHART_LINE[1] << 8) | CHART_LINE[2]
    assert (packed == line).sum() > 100  # the chart's line was drawn, in its colour


def test_the_png_reader_decodes_every_filter(tmp_path):
    """The decoder against a PNG written here with each of the five filters on a known image."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(10, 7, 3), dtype=np.uint8)
    rows = []
    prior = np.zeros(21, dtype=np.int32)
    for y in range(10):
        line = image[y].reshape(21).astype(np.int32)
        kind = y % 5
        left = np.concatenate([np.zeros(3, dtype=np.int32), line[:-3]])
        upleft = np.concatenate([np.zeros(3, dtype=np.int32), prior[:-3]])
        if kind == 0:
            filtered = line
        elif kind == 1:
            filtered = line - left
        elif kind == 2:
            filtered = line - prior
        elif kind == 3:
            filtered = line - (left + prior) // 2
        else:
            p = left + prior - upleft
            pa, pb, pc = abs(p - left), abs(p - prior), abs(p - upleft)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
            filtered = line - predictor
        rows.append(bytes([kind]) + (filtered % 256).astype(np.uint8).tobytes())
        prior = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = tmp_path / "t.png"
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 10, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    assert (read_png(png) == image).all()


# -- the README's screenshot: a real report --------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
#: the run the screenshot shows: a tiny random llama under production (benchmarks/tiny_run.py)
RECORDED_RUN = REPO / "docs" / "runs" / "tiny-production.json"
SCREENSHOT = REPO / "docs" / "images" / "report.png"
#: the browser window the README's screenshot is taken in: the matrix, the ladder and its charts
WINDOW = (1200, 1800)
#: the verdict matrix's cell backgrounds (the template's .v-fail and .v-pass)
MATRIX_FAIL, MATRIX_PASS = (0xFF, 0xEB, 0xE9), (0xDA, 0xFB, 0xE1)
#: the first two palette colours: the ladder's two dots and their names
DOTS = ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00))


def colour_count(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((pixels == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


@needs_chromium
def test_the_readme_screenshot_is_a_real_report_with_the_matrix_and_charts(tmp_path):
    """Renders the recorded run's HTML report and screenshots it in Chromium: the page
    must open with the verdict matrix (failing and passing cells) and show the ladder's charts
    (one dot per quant, in the palette's colours). The committed docs/images/report.png is held
    to the same; ``QGATE_UPDATE_SCREENSHOT=1`` replaces it with the fresh one."""
    from qgate.integrity import read_results

    page = tmp_path / "report.html"
    page.write_text(HtmlReporter().render(read_results(RECORDED_RUN)), encoding="utf-8")
    shot = tmp_path / "report.png"
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}", size)
    if os.environ.get("QGATE_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    for name, path in (("fresh", shot), ("committed", SCREENSHOT)):
        pixels = read_png(path)
        assert pixels.shape == (WINDOW[1], WINDOW[0], 3), name
        top = pixels[: WINDOW[1] // 3]  # the matrix opens the page
        assert colour_count(top, MATRIX_FAIL) > 500, name
        assert colour_count(top, MATRIX_PASS) > 500, name
        for colour in DOTS:
            assert colour_count(pixels, colour) > 30, (name, colour)
