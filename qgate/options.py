"""Typed option schemas: a plain dataclass is the schema, validated with key paths.

A check declares its options as a dataclass::

    @dataclass
    class Options:
        max_delta: float = option(0.01, "largest allowed relative PPL rise", minimum=0)

:func:`validate` turns the raw mapping from YAML into an instance, or raises
:class:`~qgate.errors.PolicyError` naming the key path, what was expected, and for an unknown key
the nearest known one. The policy file itself is validated the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from qgate.errors import PolicyError

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with a help text and optional numeric bounds."""
    metadata = {"help": help, "minimum": minimum, "maximum": maximum}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class NoOptions:
    """The schema of a plugin that takes no options."""


def suggest(word: str, candidates: typing.Iterable[str]) -> str:
    """A ``did you mean`` suffix for an unknown name, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate(schema: type[T], raw: Any, *, path: str = "", source: str | None = None) -> T:
    """Build ``schema`` (a dataclass type) from ``raw``, checking every key and type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyError(
            f"expected a mapping, got {_describe(raw)}", source=source, key_path=path or "<top>"
        )
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        name = str(key).replace("-", "_")
        if name not in fields:
            known = sorted(fields)
            raise PolicyError(
                f"unknown key {key!r}{suggest(str(key), known)}; known keys: {', '.join(known) or 'none'}",
                source=source,
                key_path=key_path,
            )
        field = fields[name]
        values[name] = _convert(hints[name], value, key_path, source)
        _check_bounds(field, values[name], key_path, source)
    for name, field in fields.items():
        if name not in values and field.default is _MISSING and field.default_factory is _MISSING:
            key_path = f"{path}.{name}" if path else name
            raise PolicyError(
                f"required key is missing ({_type_name(hints[name])})",
                source=source,
                key_path=key_path,
            )
    return schema(**values)


def describe_schema(schema: type) -> list[dict[str, Any]]:
    """The fields of a schema as plain data, for ``qgate plugins`` and the docs."""
    hints = typing.get_type_hints(schema)
    rows = []
    for f in dataclasses.fields(schema):
        if f.default is not _MISSING:
            default: Any = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": default,
                "help": f.metadata.get("help", ""),
                "required": f.default is _MISSING and f.default_factory is _MISSING,
            }
        )
    return rows


def _check_bounds(
    field: dataclasses.Field[Any], value: Any, key_path: str, source: str | None
) -> None:
    values = (
        list(value.values())
        if isinstance(value, dict)
        else value
        if isinstance(value, list)
        else [value]
    )
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):  # an int is finite, however long
            raise PolicyError(f"must be a finite number, got {v}", source=source, key_path=key_path)
        minimum, maximum = field.metadata.get("minimum"), field.metadata.get("maximum")
        if minimum is not None and v < minimum:
            raise PolicyError(f"must be >= {minimum}, got {v}", source=source, key_path=key_path)
        if maximum is not None and v > maximum:
            raise PolicyError(f"must be <= {maximum}, got {v}", source=source, key_path=key_path)


def _convert(tp: Any, value: Any, path: str, source: str | None) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, source)
            except PolicyError as exc:
                errors.append(exc)
        raise PolicyError(
            f"expected {_type_name(tp)}, got {_describe(value)}", source=source, key_path=path
        )
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        choices = ", ".join(repr(a) for a in args)
        hint = suggest(str(value), [str(a) for a in args])
        raise PolicyError(
            f"expected one of {choices}, got {value!r}{hint}", source=source, key_path=path
        )
    if origin is list:
        if not isinstance(value, list):
            raise PolicyError(
                f"expected a list, got {_describe(value)}", source=source, key_path=path
            )
        (item,) = args or (Any,)
        return [_convert(item, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PolicyError(
                f"expected a mapping, got {_describe(value)}", source=source, key_path=path
            )
        key_tp, val_tp = args or (Any, Any)
        return {
            _convert(key_tp, k, f"{path}.{k}", source): _convert(val_tp, v, f"{path}.{k}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return validate(tp, value, path=path, source=source)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise PolicyError("number too large", source=source, key_path=path) from None
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise PolicyError(
        f"expected {_type_name(tp)}, got {_describe(value)}", source=source, key_path=path
    )


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else ""
        )
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if origin is dict:
        return f"a mapping of {_type_name(args[1]) if len(args) > 1 else 'values'}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
