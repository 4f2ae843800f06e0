"""repetition and task-accuracy on the fake backend; chat templates in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qgate.chat import format_prompt, render_chat
from qgate.results import RunReport, Verdict
from qgate_checks.tasks import TIERS, extract_answer, few_shot_prompt, make_tasks

POLICY = """
checks:
  - use: repetition
    options: {max_collapse_increase: 0.05, max_tokens: 96}
"""


def run(
    qgate, tmp_path: Path, policy: str, subject: Path, reference: Path
) -> tuple[int, RunReport]:
    policy_file = tmp_path / "gen.yaml"
    policy_file.write_text(policy)
    out = tmp_path / "r.json"
    result = qgate(
        "check",
        subject,
        "--reference",
        reference,
        "--policy",
        policy_file,
        "--json",
        out,
        "--html",
        tmp_path / "r.html",
        "-q",
    )
    assert result.code in (0, 1), result
    return result.code, RunReport.from_dict(json.loads(out.read_text()))


def test_a_looping_quant_fails_and_the_report_shows_the_loop(qgate, fake, tmp_path):
    code, report = run(qgate, tmp_path, POLICY, fake("loops", repeat_after=8), fake("ref"))
    (result,) = report.subjects[0].results
    assert code == 1 and result.verdict is Verdict.FAIL
    assert result.details["subject_collapse_rate"] > 0.9
    assert result.details["reference_collapse_rate"] < 0.1
    flips = result.details["flips"]  # healthy with the reference, collapsed with the subject
    assert flips["right_to_wrong"] > 0.9 * flips["items"] and flips["wrong_to_right"] == 0
    assert flips["mcnemar_p"] < 1e-6
    assert "Healthy outputs flipped vs the reference" in [t.title for t in result.figures.tables]
    assert "worst prompt:" in result.message
    samples = result.figures.samples
    assert samples and any(s.subject_highlight for s in samples)
    html = (tmp_path / "r.html").read_text()
    assert "<mark" in html and "subject" in html


def test_the_reference_looping_too_is_not_blamed_on_the_quant(qgate, fake, tmp_path):
    code, report = run(
        qgate, tmp_path, POLICY, fake("loops", repeat_after=20), fake("ref", repeat_after=20)
    )
    (result,) = report.subjects[0].results
    assert code == 0 and result.verdict is Verdict.PASS
    assert result.value == 0
    assert "weak signal" in result.message


def test_a_healthy_quant_passes(qgate, fake, tmp_path):
    code, report = run(qgate, tmp_path, POLICY, fake("good", noise=0.1), fake("ref"))
    assert code == 0 and report.subjects[0].results[0].verdict is Verdict.PASS


def test_reference_generations_come_from_the_cache_on_the_second_run(fake, tmp_path):
    from qgate.cache import ReferenceCache
    from qgate.plugins import Registry
    from qgate.policy import load_policy
    from qgate.runner import Runner

    policy_file = tmp_path / "gen.yaml"
    policy_file.write_text(POLICY)
    registry = Registry.from_environment()
    policy = load_policy(str(policy_file), registry.check_objects())
    cache = ReferenceCache(tmp_path / "cache")
    ref, sub = fake("ref"), fake("sub", repeat_after=30)
    first = Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    second = Runner(registry, policy, reference=str(ref), cache=cache).run([str(sub)])
    assert first.counters["generation_cache_misses"] == 1
    assert second.counters["generation_cache_hits"] == 1
    assert second.counters["model_loads"] == 1  # the reference was not even loaded
    assert first.subjects[0].results[0].value == second.subjects[0].results[0].value


def test_tasks_are_deterministic_and_answers_are_right():
    for tier in TIERS:
        assert make_tasks(tier, 5, 3) == make_tasks(tier, 5, 3)
        assert make_tasks(tier, 5, 3) != make_tasks(tier, 5, 4)
    task = make_tasks("one_step", 1, 0)[0]
    assert str(eval(task.question.removeprefix("What is ").rstrip("?"))) == task.answer
    chain = make_tasks("long_chain", 1, 0)[0]
    assert len(chain.question.split(". ")) >= 7
    assert extract_answer(" 42\n") == "42"
    assert extract_answer(" The list is [3,1, 4].") == "[3, 1, 4]"
    assert extract_answer(" -7 apples") == "-7"
    assert extract_answer(" none") is None
    prompt = few_shot_prompt(task, make_tasks("one_step", 2, 9))
    assert prompt.count("Q: ") == 3 and prompt.endswith("A:")


def _answers(tiers: dict[str, float], per_tier: int = 10) -> dict[str, str]:
    """Canned answers: the first share of each tier's tasks answered right."""
    answers = {}
    for tier, share in tiers.items():
        for task in make_tasks(tier, per_tier, 0)[: round(share * per_tier)]:
            answers[task.question] = task.answer
    return answers


TASK_POLICY = """
checks:
  - use: task-accuracy
    options:
      tasks_per_tier: 10
      max_drop: {one_step: 0.1, multi_step: 0.1, symbolic: 0.2, long_chain: 0.3}
"""


def test_task_accuracy_per_tier(qgate, fake, tmp_path):
    ref = fake(
        "ref",
        answers=_answers({"one_step": 1.0, "multi_step": 1.0, "symbolic": 0.9, "long_chain": 0.1}),
    )
    sub = fake(
        "sub",
        answers=_answers({"one_step": 1.0, "multi_step": 0.5, "symbolic": 0.9, "long_chain": 0.0}),
    )
    code, report = run(qgate, tmp_path, TASK_POLICY, sub, ref)
    results = {r.metric: r for r in report.subjects[0].results}
    assert code == 1
    assert results["accuracy_drop[one_step]"].verdict is Verdict.PASS
    assert results["accuracy_drop[multi_step]"].verdict is Verdict.FAIL
    assert results["accuracy_drop[multi_step]"].value == pytest.approx(0.5)
    assert results["accuracy_drop[symbolic]"].value == pytest.approx(0.0)
    skipped = results["accuracy_drop[long_chain]"]
    assert skipped.verdict is Verdict.SKIP and "no signal" in skipped.message
    table = results["accuracy_drop[one_step]"].figures.tables[0]
    assert [row[0] for row in table.rows] == list(TIERS)


def test_unknown_tier_is_a_policy_error(qgate, fake, tmp_path):
    policy = tmp_path / "t.yaml"
    policy.write_text("checks:\n  - use: task-accuracy\n    options: {max_drop: {one_stpe: 0.1}}\n")
    result = qgate(
        "check",
        fake("s"),
        "--reference",
        fake("r"),
        "--policy",
        policy,
        "--json",
        tmp_path / "r.json",
        "-q",
    )
    report = RunReport.from_dict(json.loads((tmp_path / "r.json").read_text()))
    assert result.code == 2  # a policy error found while running: the report is still written
    assert report.subjects[0].results[0].verdict is Verdict.ERROR
    assert "unknown tiers ['one_stpe']" in report.subjects[0].results[0].message


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_templates_render_in_the_sandbox():
    text = render_chat(CHATML, [{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(CHATML, "Hi", kind="instruction").style == "template"
    assert format_prompt(CHATML, "Once upon", kind="continuation").text == "Once upon"
    plain = format_prompt(None, "Hi", kind="instruction")
    assert (
        plain.style == "plain"
        and plain.text.endswith("Answer:")
        and "no chat template" in plain.note
    )


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch /tmp/qgate-pwned').read() }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ self._TemplateReference__context }}",
        "{{ messages.append(1) }}",
        "{{ raise_exception('no system role') }}",
        "{% for i in range(10**7) %}xxxxxxxxxx{% endfor %}",
        "{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{{ 10 ** 10000000 }}",
        "{% set s = 'ab' %}{% for c in s * 30000 %}{% for d in s * 30000 %}{% endfor %}{% endfor %}",
        "{% for m in messages %}{{ m.content * 100000 }}{% endfor %}",
    ],
)
def test_hostile_templates_fail_closed(payload):
    with pytest.raises(ValueError):
        render_chat(payload, [{"role": "user", "content": "Hi"}])
    rendered = format_prompt(payload, "Hi", kind="instruction")
    assert rendered.style == "plain" and "refused" in rendered.note
    assert not Path("/tmp/qgate-pwned").exists()
