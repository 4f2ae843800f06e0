"""``chat-template``: the subject keeps the reference's chat template, in what it renders.

A conversion that drops the template (llama.cpp pull request 6156) or an edited copy leaves the
weights alone; chat front-ends then fall back to a generic format, and the model answers a
conversation shape it was never trained on. Templates are compared by what they render: fixed
conversations (one turn, a system prompt, several turns, with and without the generation
prompt) go through both templates in qgate's sandbox (:mod:`qgate.chat`), and every conversation
must come out the same. Two templates that differ in text but render alike pass; a template the
sandbox refuses renders as its refusal, which must also be the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgate.chat import render_chat
from qgate.check import Check, CheckContext
from qgate.hookspecs import hookimpl
from qgate.options import NoOptions
from qgate.results import CheckResult, Comparison, SkipCause
from qgate_checks.parity.differences import shown

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Conversation:
    name: str
    messages: Messages
    generation_prompt: bool = True


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation("one turn", [{"role": "user", "content": "What is 17 + 25?"}]),
    Conversation(
        "system prompt",
        [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Name a colour."},
        ],
    ),
    Conversation(
        "several turns",
        [
            {"role": "user", "content": "Hi! Can you count?"},
            {"role": "assistant", "content": "Yes: 1, 2, 3."},
            {"role": "user", "content": "Now in French, please."},
        ],
    ),
    Conversation(
        "no generation prompt",
        [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello!"},
        ],
        generation_prompt=False,
    ),
)

#: characters shown on each side of the first rendering difference
CONTEXT_CHARS = 24


class ChatTemplateCheck(Check[NoOptions]):
    name = "chat-template"
    description = "the reference's chat template is present and renders fixed conversations alike"
    needs_reference = True

    def run(self, ctx: CheckContext[NoOptions]) -> list[CheckResult]:
        assert ctx.reference is not None
        ours, theirs = ctx.subject.info, ctx.reference.info
        if theirs.chat_template is None:
            return [
                ctx.skip(
                    "the reference has no chat template: there is none to keep",
                    "template_differences",
                    cause=SkipCause.NOT_APPLICABLE,
                )
            ]
        count = len(CONVERSATIONS)
        if ours.chat_template is None:
            message = (
                f"chat template missing: the reference has one (sha256 "
                f"{(theirs.chat_template_hash or '')[:12]}) and {ours.label} has none; chat "
                "front-ends fall back to a generic format the model was not trained on"
            )
            return [self._result(ctx, count, message)]
        if ours.chat_template == theirs.chat_template:
            return [
                self._result(
                    ctx, 0, "the chat template is the reference's, character for character"
                )
            ]
        differing = [
            (c.name, where)
            for c in CONVERSATIONS
            if (where := rendering_difference(ours.chat_template, theirs.chat_template, c))
        ]
        if not differing:
            message = (
                f"the chat template differs in text from the reference's but renders all {count} "
                f"conversations ({', '.join(c.name for c in CONVERSATIONS)}) alike"
            )
        else:
            name, where = differing[0]
            message = (
                f"the chat template renders {len(differing)} of {count} conversations otherwise "
                f"than the reference's ({', '.join(n for n, _ in differing)}); {name}: {where}"
            )
        return [self._result(ctx, len(differing), message)]

    @staticmethod
    def _result(ctx: CheckContext[NoOptions], value: int, message: str) -> CheckResult:
        return ctx.result(
            "template_differences", value, threshold=0, comparison=Comparison.LE, message=message
        )


def render(template: str, conversation: Conversation) -> str:
    """What ``template`` makes of ``conversation``, or its refusal, as text to compare."""
    try:
        return render_chat(
            template, conversation.messages, add_generation_prompt=conversation.generation_prompt
        )
    except ValueError as exc:
        return f"(refused: {exc})"


def rendering_difference(subject: str, reference: str, conversation: Conversation) -> str:
    """Where the two templates' renderings of ``conversation`` first differ ("" where they do
    not), with the text around it on both sides."""
    ours, theirs = render(subject, conversation), render(reference, conversation)
    if ours == theirs:
        return ""
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
        min(len(ours), len(theirs)),
    )
    start = max(0, at - CONTEXT_CHARS)
    return (
        f"at character {at}, the subject renders {shown(ours[start : at + CONTEXT_CHARS], 80)} "
        f"and the reference {shown(theirs[start : at + CONTEXT_CHARS], 80)}"
    )


@hookimpl
def qgate_checks() -> list[Check]:
    return [ChatTemplateCheck()]
