"""Faults and hostile input during a run: out of memory, SIGTERM and Ctrl-C, a GGUF whose chat
template is an injection payload, no unsafe deserialisation anywhere, and determinism."""

from __future__ import annotations

import functools
import hashlib
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tokenize
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from qgate.cache import ReferenceCache
from qgate.plugins import Registry
from qgate.policy import load_policy
from qgate.results import RunReport, Verdict
from qgate.runner import Runner
from tests.conftest import needs_llama_cpp

REPO = Path(__file__).resolve().parents[1]


def results_of(path: Path) -> RunReport:
    return RunReport.from_dict(json.loads(path.read_text()))


# --------------------------------------------------------------------------------------------
# out of memory


def test_a_check_out_of_memory_is_an_error_and_every_report_is_written(
    qgate, fake, tmp_path, monkeypatch
):
    monkeypatch.setenv("QGATE_PLUGINS", "tests.fault_plugin")
    policy = tmp_path / "oom.yaml"
    policy.write_text(
        "checks:\n  - use: out-of-memory\n"
        "  - use: quant-floor\n    options: {min_bits_per_weight: 2}\n"
    )
    reports = {name: tmp_path / f"r.{name}" for name in ("json", "junit", "html", "markdown")}
    args = [a for name, path in reports.items() for a in (f"--{name}", path)]
    result = qgate("check", fake("sub"), "--policy", policy, *args, "-q")
    assert result.code == 1, result
    assert all(path.stat().st_size > 0 for path in reports.values())
    results = {r.check_id: r for r in results_of(reports["json"]).subjects[0].results}
    assert results["out-of-memory"].verdict is Verdict.ERROR
    assert results["out-of-memory"].message == "out of memory"
    assert results["quant-floor"].verdict is Verdict.PASS  # the run went on
    assert ET.parse(reports["junit"]).getroot().find(".//testcase/error") is not None
    assert "out of memory" in reports["html"].read_text()
    assert "out of memory" in reports["markdown"].read_text()


# --------------------------------------------------------------------------------------------
# SIGTERM and Ctrl-C, for real: a qgate process, a signal, its exit code and its files

INTERRUPT_POLICY = """\
name: interrupt
backend: {n_ctx: 64}
evaluation: {chunks: 2, top_k: 8, tail_samples: 8, bootstrap: 100}
datasets: [en]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: quant-floor
    options: {min_bits_per_weight: 2}
"""


def _lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)
    out.put("")  # end of stream


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_writes_partial_results_marked_incomplete(fake, tmp_path, signum):
    ref, first = fake("ref"), fake("first", noise=0.05)
    slow = fake("slow", noise=0.05, delay=1.0)  # a minute per chunk: it never finishes here
    policy = tmp_path / "p.yaml"
    policy.write_text(INTERRUPT_POLICY)
    out, junit = tmp_path / "out.json", tmp_path / "junit.xml"
    command = [sys.executable, "-m", "qgate", "check", first, slow, "--reference", ref]
    command += ["--policy", policy, "--json", out, "--junit", junit]
    process = subprocess.Popen(
        [str(c) for c in command],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell or CI runner may start children with SIGINT ignored; Ctrl-C must work anyway
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while not any("checking slow" in line for line in seen):  # the first subject is done
            assert time.monotonic() < deadline, "".join(seen)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            assert line, "qgate exited before the second subject started:\n" + "".join(seen)
            seen.append(line)
        time.sleep(0.5)  # into the slow subject's scoring
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stopped_in = time.monotonic() - sent
    while (line := lines.get(timeout=5)) != "":
        seen.append(line)
    stderr = "".join(seen)
    assert code == 3, stderr
    assert stopped_in < 15, stopped_in  # it stopped, it did not finish the slow model
    assert "interrupted: writing what was measured" in stderr
    report = results_of(out)
    assert report.incomplete
    first_results = {r.name: r for r in report.subjects[0].results}
    assert report.subjects[0].label == "first"
    assert first_results["perplexity.ppl_delta"].verdict is Verdict.PASS
    assert first_results["quant-floor.bits_per_weight"].verdict is Verdict.PASS
    assert junit.stat().st_size > 0  # every requested report, not only the JSON


# --------------------------------------------------------------------------------------------
# a chat template that is an injection payload, in a real GGUF, through `qgate check`


@needs_llama_cpp
@pytest.mark.llama_cpp
def test_a_gguf_with_an_injection_template_fails_closed(qgate, tmp_path):
    from tests.tiny_gguf import write_tiny_llama

    marker = tmp_path / "pwned"
    payload = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    small = functools.partial(write_tiny_llama, n_embd=64, n_layers=1, n_ff=128, n_head=2)
    subject = small(tmp_path / "hostile.gguf", chat_template=payload)
    reference = small(tmp_path / "ref.gguf")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "kind": "instruction", "prompt": text}) + "\n"
            for i, text in enumerate(["Name a colour.", "Say hello.", "Count to three."])
        )
    )
    policy = tmp_path / "gen.yaml"
    policy.write_text(
        "backend: {n_ctx: 256, threads: 1}\nchecks:\n  - use: repetition\n"
        f"    options: {{max_tokens: 8, max_collapse_increase: 1.0, prompts: {prompts}}}\n"
    )
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    result = qgate(
        "check",
        subject,
        "--reference",
        reference,
        "--policy",
        policy,
        "--json",
        out,
        "--html",
        html,
        "-q",
    )
    assert result.code in (0, 1), result
    (repetition,) = results_of(out).subjects[0].results
    assert repetition.verdict in (Verdict.PASS, Verdict.FAIL), repetition.message  # it ran
    notes = repetition.details["notes"]
    assert any(n.startswith("subject: chat template refused") for n in notes), notes
    assert not marker.exists()  # nothing was executed
    info = json.loads(qgate("inspect", subject, "--json").out)
    assert info["chat_template_hash"] == hashlib.sha256(payload.encode()).hexdigest()  # only data
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# no unsafe deserialisation or dynamic code anywhere in the package

FORBIDDEN: dict[str, re.Pattern[str]] = {
    "pickle": re.compile(
        r"^\s*(import|from)\s+(c?pickle|dill|shelve|marshal|joblib)\b|\bpickle\.(loads?|Unpickler)\b",
        re.M,
    ),
    "torch.load": re.compile(r"\btorch\.load\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "trust_remote_code=True": re.compile(r"trust_remote_code[\"']?\s*[=:]\s*True"),
    "unsafe yaml.load": re.compile(
        r"\byaml\.(load|load_all|full_load|unsafe_load|unsafe_load_all)\(|"
        r"Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)\b"
    ),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\s*\("),
    "shell=True": re.compile(r"\bshell\s*=\s*True"),
}


def code_without_comments_and_docs(source: str) -> str:
    """The source with comments removed and string literals emptied (``"..."`` -> ``""``), so a
    docstring that says "never eval(" does not count, while ``{"k": True}`` keeps its shape."""
    parts: list[str] = []
    last_line, last_col = 1, 0
    for tok in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if tok.start[0] > last_line:
            parts.append("\n" * (tok.start[0] - last_line))
            last_col = 0
        parts.append(" " * max(tok.start[1] - last_col, 0))
        if tok.type == tokenize.COMMENT:
            pass
        elif tok.type == tokenize.STRING:
            parts.append('""')
        else:
            parts.append(tok.string)
        last_line, last_col = tok.end
    return "".join(parts)


def package_sources() -> list[Path]:
    files = sorted([*REPO.joinpath("qgate").rglob("*.py"), *REPO.joinpath("plugins").rglob("*.py")])
    assert len(files) > 30  # the scan found the package
    return files


def findings(source: str) -> list[str]:
    code = code_without_comments_and_docs(source)
    found = []
    for name, pattern in FORBIDDEN.items():
        # keyword arguments to from_pretrained and the like live in strings only as dict keys
        text = source if name == "trust_remote_code=True" else code
        found += [f"{name}: {m.group(0)!r}" for m in pattern.finditer(text)]
    return found


def test_the_policy_loader_is_yamls_safe_loader():
    """Policies are read by a SafeLoader subclass that only adds the duplicate-key check:
    it constructs plain values only, as ``yaml.safe_load`` does."""
    import yaml

    from qgate.policy.loader import _UniqueKeyLoader, safe_load_unique_keys

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)
    # no tag beyond the safe ones: nothing that builds Python objects
    assert set(_UniqueKeyLoader.yaml_constructors) == set(yaml.SafeLoader.yaml_constructors)
    with pytest.raises(yaml.constructor.ConstructorError):
        safe_load_unique_keys("!!python/object/apply:os.system ['true']")


def test_no_code_path_deserialises_unsafely_or_runs_dynamic_code():
    problems = {
        str(path.relative_to(REPO)): found
        for path in package_sources()
        if (found := findings(path.read_text(encoding="utf-8")))
    }
    assert not problems


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\n",
        "from pickle import loads\n",
        "data = pickle.loads(blob)\n",
        "state = torch.load(path)\n",
        "arr = np.load(path, allow_pickle=True)\n",
        "AutoModel.from_pretrained(p, trust_remote_code=True)\n",
        'kwargs = {"trust_remote_code": True}\n',
        "cfg = yaml.load(text)\n",
        "cfg = yaml.load(text, Loader=yaml.FullLoader)\n",
        "value = eval(expr)\n",
        "exec(code, {})\n",
        "subprocess.run(cmd, shell=True)\n",
    ],
)
def test_the_scan_catches_each_pattern(snippet):
    assert findings(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        '"""Never eval( or pickle.loads anything."""\n',
        "# no torch.load( here\n",
        "model.eval()\nast.literal_eval(s)\n",
        "np.load(path, allow_pickle=False)\n",
        "yaml.safe_load(text)\n",
        "from_pretrained(p, trust_remote_code=False)\n",
    ],
)
def test_the_scan_ignores_safe_code_and_prose(snippet):
    assert not findings(snippet)


# --------------------------------------------------------------------------------------------
# determinism: the same inputs give the same verdicts and numbers, exactly

DETERMINISM_POLICY = """\
name: determinism
backend: {n_ctx: 128, threads: 1}
evaluation: {chunks: 2, top_k: 16, tail_samples: 16, bootstrap: 200}
datasets: [en, code]
checks:
  - use: perplexity
    options: {max_delta: 0.05}
  - use: kl-divergence
    options: {max_mean: 0.05}
"""


def _run_twice(tmp_path: Path, subject: Path, reference: Path) -> list[list[dict[str, Any]]]:
    policy_file = tmp_path / "det.yaml"
    policy_file.write_text(DETERMINISM_POLICY)
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    runs = []
    for i in range(2):  # no shared cache: the reference is scored afresh each time
        report = Runner(
            registry, policy, reference=str(reference), cache=ReferenceCache(tmp_path / f"c{i}")
        ).run([str(subject)])
        assert report.counters["model_loads"] == 2
        results = [r.to_dict() for r in report.subjects[0].results]
        for r in results:
            r.pop("duration_s")
        runs.append(results)
    return runs


def _assert_identical(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> None:
    names = [r["check_id"] + "." + r["metric"] for r in first]
    assert {"perplexity.ppl_delta", "kl-divergence.kld_mean"} <= set(names), names
    assert all(r["value"] is not None for r in first)
    # exact equality of every value, interval, verdict, message and detail (JSON-normalised)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_runs_are_deterministic_on_the_fake_backend(fake, tmp_path):
    _assert_identical(*_run_twice(tmp_path, fake("sub", noise=0.3), fake("ref")))


@needs_llama_cpp
@pytest.mark.llama_cpp
def test_runs_are_deterministic_on_a_real_gguf_ladder(tiny_ladder, tmp_path):
    first, second = _run_twice(tmp_path, tiny_ladder["Q4_K_M"], tiny_ladder["F16"])
    _assert_identical(first, second)
    assert any(r["value"] > 0 for r in first if r["metric"] == "kld_mean")  # it measured damage
