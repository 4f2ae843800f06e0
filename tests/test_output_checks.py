"""output-script and json-output: the answer labels, and the verdicts on the fake backend.

The fake answers a prompt ending in ``Q: <question>\\nA:`` with its ``answers`` knob, and a chat
template that renders the user's message as it is keeps the prompt so; each test writes its own
prompt set in that shape and gives each model its canned replies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qgate.prompts import load_prompt_set
from qgate.results import RunReport, SkipCause, Verdict
from qgate_checks.degeneration import script_of
from qgate_checks.json_output import label as json_label
from qgate_checks.json_output import parse_reply, required_keys
from qgate_checks.output_script import label as script_label

#: renders the single user message as it is, so the fake sees the prompt's ``Q: ...\nA:`` ending
VERBATIM = {"chat_template": "{{ messages[0]['content'] }}"}
N = 20


def run(qgate: Any, tmp_path: Path, check: str, subject: Path, reference: Path) -> RunReport:
    policy = tmp_path / "out.yaml"
    policy.write_text(f"checks:\n{check}")
    out = tmp_path / "r.json"
    result = qgate(
        "check", subject, "--reference", reference, "--policy", policy, "--json", out,
        "--html", tmp_path / "r.html", "-q",
    )  # fmt: skip
    assert result.code in (0, 1), result
    return RunReport.from_dict(json.loads(out.read_text()))


def write_set(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return path


# --------------------------------------------------------------------------------------------
# json-output


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"name": "Maria", "age": 34}', "ok"),
        ('```json\n{"name": "Maria", "age": 34}\n```', "ok"),  # a chat model's code fence
        ('Here it is: {"name": "Maria", "age": 34}. Done.', "ok"),  # one object in prose
        ('{"name": "Maria"}', "missing keys"),
        ('["Maria", 34]', "not an object"),
        ('{"name": "Maria", "age": 34', "not JSON"),  # a dropped brace
        ("Maria is 34.", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_json_answers_are_labelled(text, expected):
    assert json_label(text, ("name", "age")) == expected


def test_parse_reply_refuses_what_holds_no_json():
    with pytest.raises(ValueError):
        parse_reply("{ not json }")


def test_the_shipped_json_prompts_each_name_their_keys():
    keys = required_keys("json")
    prompts = load_prompt_set("json").prompts
    assert len(prompts) >= 10 and set(keys) == {p.id for p in prompts}
    for prompt in prompts:  # every asked key is named in the prompt's text
        assert all(f'"{key}"' in prompt.prompt for key in keys[prompt.id]), prompt.id


def json_prompts(tmp_path: Path) -> Path:
    return write_set(
        tmp_path / "json.jsonl",
        [
            {
                "id": f"j{i}",
                "kind": "instruction",
                "keys": ["a", "b"],
                "prompt": f'Reply in JSON with the keys "a" and "b".\nQ: record {i}\nA:',
            }
            for i in range(N)
        ],
    )


def json_replies(broken: dict[int, str]) -> dict[str, str]:
    good = '{"a": 1, "b": 2}'
    return {f"record {i}": broken.get(i, good) for i in range(N)}


def json_check(prompts: Path, limit: float = 0.1) -> str:
    return f"  - use: json-output\n    options: {{prompts: '{prompts}', max_valid_drop: {limit}}}\n"


def test_a_quant_that_breaks_json_fails_against_the_reference(qgate, fake, tmp_path):
    prompts = json_prompts(tmp_path)
    reference = fake("ref", metadata=VERBATIM, answers=json_replies({}))
    broken = {i: '{"a": 1, "b": 2' for i in range(6)} | {6: '{"a": 1}', 7: '{"a": 1}'}
    subject = fake("sub", metadata=VERBATIM, answers=json_replies(broken))
    (result,) = run(qgate, tmp_path, json_check(prompts), subject, reference).subjects[0].results
    assert result.metric == "json_valid_drop" and result.verdict is Verdict.FAIL
    assert result.value == pytest.approx(8 / N)
    assert result.details["reference_share"] == 1.0
    assert result.details["subject_share"] == pytest.approx(12 / N)
    low, high = result.details["subject_interval"]
    assert low < 12 / N < high
    flips = result.details["flips"]
    assert (flips["right_to_wrong"], flips["wrong_to_right"]) == (8, 0)
    assert flips["mcnemar_p"] == pytest.approx(2 * 0.5**8)
    rates = result.figures.tables[0]
    assert rates.title == "JSON answers"
    assert rates.rows[1][:6] == ["subject", N, 12, 2, 0, 6]  # ok, missing keys, -, not JSON
    assert len(result.figures.samples) == 4 and result.figures.samples[0].note.startswith("j0")
    html = (tmp_path / "r.html").read_text()
    assert "JSON answers" in html and "Item flips vs the reference" in html


def test_a_quant_that_keeps_json_passes(qgate, fake, tmp_path):
    prompts = json_prompts(tmp_path)
    reference = fake("ref", metadata=VERBATIM, answers=json_replies({0: "sure"}))
    subject = fake("sub", metadata=VERBATIM, answers=json_replies({1: "sure"}))  # one each way
    # 20 prompts cannot resolve 10 points either way (one flip is 5): a looser limit decides
    check = json_check(prompts, limit=0.25)
    (result,) = run(qgate, tmp_path, check, subject, reference).subjects[0].results
    assert result.verdict is Verdict.PASS and result.value == pytest.approx(0.0)
    assert result.details["flips"]["right_to_wrong"] == 1
    assert result.details["flips"]["wrong_to_right"] == 1


def test_json_prompts_the_reference_fails_carry_no_signal(qgate, fake, tmp_path):
    prompts = json_prompts(tmp_path)
    reference = fake("ref", metadata=VERBATIM, answers=json_replies(dict.fromkeys(range(15), "")))
    subject = fake("sub", metadata=VERBATIM, answers=json_replies(dict.fromkeys(range(N), "")))
    results = run(qgate, tmp_path, json_check(prompts), subject, reference).subjects[0].results
    (result,) = [r for r in results if r.metric == "json_valid_drop"]
    assert result.verdict is Verdict.SKIP and result.skip_cause is SkipCause.NO_SIGNAL
    assert result.details["reference_share"] == pytest.approx(5 / N)  # still reported


def test_json_prompts_without_keys_are_an_error(qgate, fake, tmp_path):
    prompts = write_set(
        tmp_path / "bad.jsonl", [{"id": "x", "kind": "instruction", "prompt": "Reply in JSON."}]
    )
    policy = tmp_path / "out.yaml"
    policy.write_text(f"checks:\n{json_check(prompts)}")
    out = tmp_path / "r.json"
    result = qgate("check", fake("s"), "--reference", fake("r"), "--policy", policy, "--json", out)
    assert result.code == 1  # the check errs: the gate cannot pass
    (error,) = RunReport.from_dict(json.loads(out.read_text())).subjects[0].results
    assert error.verdict is Verdict.ERROR and "bad.jsonl:1: each line needs 'keys'" in error.message


# --------------------------------------------------------------------------------------------
# output-script


@pytest.mark.parametrize(
    "text, script, expected",
    [
        ("Москва — столица России.", "cyrillic", "ok"),
        ("Moscow is the capital of Russia.", "cyrillic", "wrong script"),
        ("東京は日本の首都です。", "cjk", "ok"),
        ("도쿄는 일본의 수도입니다.", "cjk", "wrong script"),
        ("यह Python का एक उदाहरण है और यह अच्छा है", "devanagari", "ok"),  # quotes an English word
        ("42.", "cyrillic", "no script"),
    ],
)
def test_answers_are_labelled_by_script(text, script, expected):
    assert script_label(text, script) == expected


def test_every_shipped_multilingual_prompt_has_a_script_to_answer_in():
    prompts = load_prompt_set("multilingual").prompts
    scripts = {script_of(p.prompt) for p in prompts}
    assert None not in scripts and len(scripts) >= 8  # Latin, Cyrillic, CJK, Arabic, ...


SCRIPTS = {
    "ru": ("Ответь по-русски", "Это хороший ответ"),
    "ja": ("日本語で答えて", "これは良い答えです"),
}


def script_prompts(tmp_path: Path) -> Path:
    lines = []
    for i in range(N):
        lang = "ru" if i % 2 else "ja"
        ask = SCRIPTS[lang][0]
        lines.append(
            {"id": f"s{i}", "kind": "instruction", "lang": lang, "prompt": f"{ask}.\nQ: {i}\nA:"}
        )
    return write_set(tmp_path / "scripts.jsonl", lines)


def script_replies(english: set[int]) -> dict[str, str]:
    return {
        str(i): "This is a good answer" if i in english else SCRIPTS["ru" if i % 2 else "ja"][1]
        for i in range(N)
    }


def script_check(prompts: Path) -> str:
    return (
        f"  - use: output-script\n"
        f"    options: {{prompts: '{prompts}', max_wrong_script_increase: 0.1}}\n"
    )


def test_a_quant_that_answers_in_english_fails(qgate, fake, tmp_path):
    prompts = script_prompts(tmp_path)
    reference = fake("ref", metadata=VERBATIM, answers=script_replies({0}))
    subject = fake("sub", metadata=VERBATIM, answers=script_replies(set(range(10))))
    report = run(qgate, tmp_path, script_check(prompts), subject, reference)
    (result,) = report.subjects[0].results
    assert result.metric == "wrong_script_increase" and result.verdict is Verdict.FAIL
    assert result.value == pytest.approx(9 / N)
    assert result.interval is not None and result.interval.low > 0.1
    differs = result.details["differs_from_reference"]
    assert (differs["answers"], differs["differ"]) == (N, 9)
    low, high = differs["interval"]
    assert low < 9 / N < high
    assert result.details["flips"]["right_to_wrong"] == 9
    assert "differs from the reference's answer on 9 of 20" in result.message
    by_language = {row[0]: row[1:] for row in result.figures.tables[1].rows}
    assert by_language == {"ja": [10, 1, 5], "ru": [10, 0, 5]}
    assert "Answers by script" in (tmp_path / "r.html").read_text()


def test_a_quant_that_keeps_the_script_passes(qgate, fake, tmp_path):
    prompts = script_prompts(tmp_path)
    reference = fake("ref", metadata=VERBATIM, answers=script_replies({0}))
    subject = fake("sub", metadata=VERBATIM, answers=script_replies({0}))
    (result,) = run(qgate, tmp_path, script_check(prompts), subject, reference).subjects[0].results
    assert result.verdict is Verdict.PASS and result.value == 0
    assert result.details["differs_from_reference"]["differ"] == 0
