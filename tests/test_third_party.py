"""The third-party path end to end: a separate distribution with a check plugin, installed with
pip, found through the ``qgate`` entry-point group by a ``qgate`` process that knows nothing else
about it.

``tests/example_plugin`` is that distribution (``qgate-example-check``, check ``vocab-size``).
It is built and installed once per module into a temporary ``--target`` directory, and every
test runs ``python -m qgate`` in a subprocess with that directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qgate.testing import VOCAB, write_fake_model

EXAMPLE = Path(__file__).resolve().parent / "example_plugin"
DIST = "qgate-example-check"


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``qgate-example-check`` installed into a fresh directory (not into the venv)."""
    missing = [m for m in ("setuptools", "wheel") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"building the example plugin offline needs {' and '.join(missing)} installed")
    root = tmp_path_factory.mktemp("third-party")
    source = root / "src"
    # build from a copy, so the build leaves no build/ or *.egg-info in the source tree
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(EXAMPLE, source, ignore=ignore)
    target = root / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        lacks = (
            "No module named 'setuptools",
            "No module named 'wheel",
            "BackendUnavailable",
            "invalid command 'bdist_wheel'",
        )
        if any(hint in output for hint in lacks):
            pytest.skip(
                f"cannot build the example plugin (setuptools/wheel unavailable): {output[-500:]}"
            )
        pytest.fail(f"pip could not install the example plugin:\n{output}")
    assert (target / "qgate_example_check.py").is_file()
    assert list(target.glob("qgate_example_check-0.1.0.dist-info"))
    return target


def run_qgate(
    site: Path, *args: str | Path, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m qgate ARGS`` with the example plugin importable, no plugin switches set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QGATE_PLUGINS")}
    environ.pop("QGATE_DISABLE_PLUGIN_AUTOLOAD", None)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    environ["QGATE_CACHE_DIR"] = str(cwd / "qgate-cache")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "qgate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=120,
    )


def write_policy(path: Path, min_vocab_size: int | str) -> Path:
    path.write_text(
        "name: vocab\n"
        "datasets: [en]\n"
        "checks:\n"
        "  - use: vocab-size\n"
        "    options:\n"
        f"      min_vocab_size: {min_vocab_size}\n",
        encoding="utf-8",
    )
    return path


def test_plugins_lists_the_third_party_check(site_dir: Path, tmp_path: Path) -> None:
    proc = run_qgate(site_dir, "plugins", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checks = {row["name"]: row for row in json.loads(proc.stdout)["checks"]}
    row = checks["vocab-size"]
    assert row["provider"] == f"{DIST} 0.1.0"
    assert row["plugin"] == f"{DIST}:example"
    assert row["description"] == "the subject's vocabulary is at least min_vocab_size tokens"
    (opt,) = row["options"]
    assert opt["name"] == "min_vocab_size"
    assert opt["type"] == "an integer"
    assert opt["required"] is True
    for builtin in ("perplexity", "kl-divergence", "quant-floor"):  # alongside, not instead
        assert checks[builtin]["provider"].startswith("qgate-llm ")


def test_third_party_check_fails_the_gate(site_dir: Path, tmp_path: Path) -> None:
    assert VOCAB == 258  # the fake model's vocabulary, below the floor
    model = write_fake_model(tmp_path / "small.fake.json")
    policy = write_policy(tmp_path / "vocab.yaml", 1000)
    junit = tmp_path / "out" / "junit.xml"
    proc = run_qgate(
        site_dir, "check", model, "--policy", policy, "--junit", junit, "--quiet", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    assert root.get("errors") == "0"
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert list(cases) == ["vocab-size.vocab_size"]
    failure = cases["vocab-size.vocab_size"].find("failure")
    assert failure is not None, ET.tostring(root, encoding="unicode")
    assert failure.get("message") == "vocab_size = 258.0000 (limit >= 1000.0000)"
    assert "misses the threshold" in (failure.text or "")


def test_third_party_check_passes_the_gate(site_dir: Path, tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "small.fake.json")
    policy = write_policy(tmp_path / "vocab.yaml", 100)
    junit = tmp_path / "junit.xml"
    proc = run_qgate(
        site_dir, "check", model, "--policy", policy, "--junit", junit, "--quiet", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = ET.parse(junit).getroot()
    assert (root.get("failures"), root.get("errors")) == ("0", "0")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    case = cases["vocab-size.vocab_size"]
    assert case.find("failure") is None
    assert case.find("error") is None
    assert case.find("skipped") is None


def test_third_party_options_are_validated(site_dir: Path, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("checks:\n  - use: vocab-size\n    options: {min_vocab_sise: 10}\n")
    proc = run_qgate(site_dir, "policy", "validate", typo, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{typo}: checks[0].options.min_vocab_sise:" in proc.stderr
    assert "did you mean 'min_vocab_size'" in proc.stderr

    missing = tmp_path / "missing.yaml"
    missing.write_text("checks:\n  - use: vocab-size\n")
    proc = run_qgate(site_dir, "policy", "validate", missing, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "checks[0].options.min_vocab_size: required key is missing" in proc.stderr

    negative = write_policy(tmp_path / "negative.yaml", -5)
    proc = run_qgate(site_dir, "policy", "validate", negative, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "must be >= 1, got -5" in proc.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"QGATE_PLUGINS_BLOCK": DIST},
        {"QGATE_PLUGINS_BLOCK": "example"},
        {"QGATE_DISABLE_PLUGIN_AUTOLOAD": "1"},
    ],
    ids=["block-distribution", "block-entry-point", "autoload-off"],
)
def test_blocked_third_party_check_is_a_usage_error(
    site_dir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    model = write_fake_model(tmp_path / "small.fake.json")
    policy = write_policy(tmp_path / "vocab.yaml", 100)
    proc = run_qgate(site_dir, "check", model, "--policy", policy, "--quiet", cwd=tmp_path, **env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no check plugin named 'vocab-size'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "junit.xml").exists()
