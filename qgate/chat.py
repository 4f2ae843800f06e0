"""Turning a prompt into model input: the model's own chat template, or a plain fallback.

A chat template comes from the model artifact, so it is untrusted code. It is rendered only in
a hardened ``ImmutableSandboxedEnvironment`` that fails closed:

- reaching for Python internals (``''.__class__.__mro__``, ``self._TemplateReference__context``)
  raises instead of rendering as empty;
- ``range`` has a budget of iterations per render, ``*`` and ``**`` refuse huge results, and the
  output stops at :data:`MAX_RENDERED_CHARS`;
- a wall-clock deadline (:mod:`qgate.deadline`) stops any other endless loop.

A refused template is not used: the prompt falls back to the plain format and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from qgate.deadline import deadline

PromptStyle = Literal["template", "plain"]

MAX_RENDERED_CHARS = 64_000
MAX_ITERATIONS = 10_000
MAX_SECONDS = 2.0


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    style: PromptStyle
    #: why the template was not used (no template, or the sandbox refused it)
    note: str = ""


class _Refused(Exception):
    pass


class _HardenedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, autoescape=False)
        self.budget = MAX_ITERATIONS
        self.globals["range"] = self._range
        self.globals["raise_exception"] = _raise_exception

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def _range(self, *args: int) -> range:
        values = range(*args)
        self.budget -= len(values)
        if self.budget < 0:
            raise _Refused(f"the template iterates more than {MAX_ITERATIONS} times")
        return values

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise _Refused("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(n, int)
                    and len(seq) * n > MAX_RENDERED_CHARS
                ):
                    raise _Refused("sequence repetition too large")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message: str) -> None:
    # Hugging Face templates call raise_exception() to reject a conversation shape
    raise _Refused(f"the template raised: {message}")


def render_chat(
    template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
) -> str:
    """Render ``messages`` with ``template`` in the hardened sandbox.

    ``bos_token`` renders empty because the backend adds BOS when it tokenizes.

    :raises ValueError: when the template is invalid, refused, too costly, or rejects the
        conversation.
    """
    env = _HardenedSandbox()
    pieces: list[str] = []
    size = 0
    try:
        with deadline(MAX_SECONDS, lambda: _Refused(f"rendering took longer than {MAX_SECONDS}s")):
            compiled = env.from_string(template)
            for piece in compiled.generate(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token="",
                eos_token="",
            ):
                size += len(piece)
                if size > MAX_RENDERED_CHARS:
                    raise _Refused(
                        f"the template rendered more than {MAX_RENDERED_CHARS} characters"
                    )
                pieces.append(piece)
    except Exception as exc:  # any failure of untrusted code means: do not use it
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return "".join(pieces)


def format_prompt(template: str | None, prompt: str, *, kind: str) -> RenderedPrompt:
    """An instruction as the model expects it: through its template when it has one that works.

    Continuations are never templated: they are raw text for the model to carry on.
    """
    if kind == "continuation":
        return RenderedPrompt(prompt, "plain")
    if template:
        try:
            return RenderedPrompt(
                render_chat(template, [{"role": "user", "content": prompt}]), "template"
            )
        except ValueError as exc:
            return RenderedPrompt(_plain(prompt), "plain", f"chat template refused: {exc}")
    return RenderedPrompt(_plain(prompt), "plain", "the model has no chat template")


def _plain(prompt: str) -> str:
    return f"Question: {prompt}\nAnswer:"
