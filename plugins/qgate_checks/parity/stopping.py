"""Does the subject still stop? Short chat answers, greedy, from both models.

A wrong EOS or EOT id makes every chat answer run to the token limit (unsloth 468, ollama 3759,
llama.cpp 10824) while the weights, and so every likelihood check, are untouched. The prompts
ask for answers of a word or a number, so an instruction-tuned reference stops well inside a
small budget; each model gets them through its own chat template (so a template that lost its
end-of-turn token shows here too). A reference without a chat template is not a chat model and
rarely stops at all: it gives no signal, and the check says so without generating.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.backend import Generation, GenerationRequest, GenerationSettings
from qgate.chat import format_prompt
from qgate.check import CheckContext

#: (id, prompt): questions whose whole answer is a word, a number or a short line
STOP_PROMPTS: tuple[tuple[str, str], ...] = (
    ("sum", "What is 17 + 25? Reply with the number only."),
    ("capital", "What is the capital of France? Answer with one word."),
    ("fr", "Quelle est la capitale de l'Italie ? Réponds en un mot."),
    ("colour", "Name one primary colour. One word only."),
    ("opposite", "What is the opposite of 'hot'? One word."),
    ("count", "Count from 1 to 5, separated by commas, and write nothing else."),
    ("translate", "Translate 'thank you' into German. Reply with the translation only."),
    ("code", "Write a Python expression that adds 2 and 3. The expression only."),
    ("pl", "Jak jest 'pies' po angielsku? Odpowiedz jednym słowem."),
    ("ru", "Сколько будет 2 + 2? Ответь одним числом."),
    ("de", "Wie viel ist 10 - 3? Antworte nur mit der Zahl."),
    ("ja", "「3 + 4」はいくつですか？数字だけで答えてください。"),
)


@dataclass(frozen=True)
class StopOutcome:
    """One prompt's answers from both models."""

    prompt_id: str
    prompt: str
    subject: Generation
    reference: Generation

    @property
    def runaway(self) -> bool:
        """The reference stopped and the subject ran to the budget."""
        return stopped(self.reference) and not stopped(self.subject)


def stopped(generation: Generation) -> bool:
    """Whether the model ended its answer itself (an end-of-generation token or a stop string)."""
    return generation.finish_reason in ("eos", "stop")


def answer_stop_prompts(
    ctx: CheckContext, max_tokens: int
) -> tuple[list[StopOutcome], dict[str, set[str]]]:
    """Both models' greedy answers to :data:`STOP_PROMPTS`, each through its own chat template;
    and, per model, why a prompt could not use its template."""
    assert ctx.reference is not None
    settings = GenerationSettings(max_tokens=max_tokens)
    answers: dict[str, list[Generation]] = {}
    notes: dict[str, set[str]] = {"reference": set(), "subject": set()}
    for role, handle in (("reference", ctx.reference), ("subject", ctx.subject)):
        requests = []
        for _, prompt in STOP_PROMPTS:
            rendered = format_prompt(handle.info.chat_template, prompt, kind="instruction")
            if rendered.note:
                notes[role].add(rendered.note)
            requests.append(GenerationRequest(rendered.text, settings))
        answers[role] = ctx.generate(handle, requests, task=f"stop prompts, {handle.info.label}")
    outcomes = [
        StopOutcome(prompt_id, prompt, sub, ref)
        for (prompt_id, prompt), sub, ref in zip(
            STOP_PROMPTS, answers["subject"], answers["reference"], strict=True
        )
    ]
    return outcomes, notes
