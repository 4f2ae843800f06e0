"""Reading policy files: YAML (``safe_load`` only), ``extends`` chains, validation.

Validation happens file by file from the root of the ``extends`` chain down, so an error names
the file that introduced the bad value, its key path (``checks[2].options.max_delta``) and what
was expected; an unknown key or check name comes with a did-you-mean.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from qgate.backend import BackendOptions
from qgate.errors import PolicyError
from qgate.options import suggest, validate
from qgate.policy.conditions import validate_condition
from qgate.policy.model import DatasetSpec, EvaluationSettings, Policy, PolicyDocument


class _HasOptions(Protocol):
    Options: type


def builtin_policy_dir() -> Path:
    try:
        return Path(str(resources.files("qgate.policies")))
    except ModuleNotFoundError:
        # a source checkout used without installing: the policies sit beside the package
        return Path(__file__).resolve().parents[2] / "policies"


def available_policies(extra_dirs: Iterable[Path] = ()) -> dict[str, Path]:
    """Policies that can be named without a path: the built-ins, then plugin-provided ones."""
    found: dict[str, Path] = {}
    for directory in [builtin_policy_dir(), *extra_dirs]:
        for path in sorted(Path(directory).glob("*.y*ml")):
            found.setdefault(path.stem, path)
    return found


def find_policy(
    name_or_path: str, *, relative_to: Path | None = None, extra_dirs: Iterable[Path] = ()
) -> Path:
    """Resolve ``--policy`` or ``extends:``: a file path, or the name of a shipped policy."""
    candidate = Path(name_or_path)
    with contextlib.suppress(RuntimeError):  # ~user with no such user: look for it as written
        candidate = candidate.expanduser()
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if _is_file(candidate):
        return candidate
    looks_like_path = any(sep in name_or_path for sep in "/\\") or name_or_path.endswith(
        (".yaml", ".yml")
    )
    known = available_policies(extra_dirs)
    if not looks_like_path and name_or_path in known:
        return known[name_or_path]
    hint = suggest(name_or_path, known)
    if looks_like_path:
        raise PolicyError(f"policy file not found: {candidate}{hint}")
    raise PolicyError(
        f"no policy named {name_or_path!r}{hint}; shipped policies: {', '.join(known)} "
        "(or give a path to a YAML file)"
    )


def load_policy_file(path: Path) -> dict[str, Any]:
    """Parse one YAML file into a mapping, with YAML errors made readable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise PolicyError("policy file is not UTF-8 text", source=str(path)) from None
    depth = _flow_depth(text)
    if depth > MAX_DEPTH:
        raise PolicyError(
            f"invalid YAML: brackets nested {depth} deep (at most {MAX_DEPTH})", source=str(path)
        )
    try:
        data = safe_load_unique_keys(text)
    except _DuplicateKey as exc:
        raise PolicyError(str(exc), source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    except RecursionError:
        raise PolicyError("invalid YAML: nested too deeply", source=str(path)) from None
    except Exception as exc:  # PyYAML failing to build a value: an over-long int, `!!timestamp`
        raise PolicyError(f"invalid YAML: {type(exc).__name__}: {exc}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError("a policy must be a mapping at the top level", source=str(path))
    _check_plain(data, str(path))
    return data


class _DuplicateKey(yaml.YAMLError):
    """A mapping of the policy file names one key twice."""

    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark):
        where = (
            f"lines {first.line + 1} and {second.line + 1}"
            if first.line != second.line
            else f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
        )
        super().__init__(f"duplicate key {key!r} at {where}")


def safe_load_unique_keys(text: str) -> Any:
    """``yaml.safe_load`` (what it does, step by step) with :class:`_UniqueKeyLoader`."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _UniqueKeyLoader(yaml.SafeLoader):
    """``safe_load``, except that a key given twice in one mapping is an error.

    PyYAML keeps the last value silently, so a second ``checks:`` further down a long policy
    (a merge gone wrong, or a pull request appending one) would replace the whole gate
    unnoticed. Keys brought in by a ``<<:`` merge may still be overridden: that is what
    merging is for.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicates(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        first_seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class refuses unhashable keys with its own message
            if key in first_seen:
                raise _DuplicateKey(key, first_seen[key], key_node.start_mark)
            first_seen[key] = key_node.start_mark


#: deepest nesting of brackets in a policy file (real policies use 3 or 4 levels)
MAX_DEPTH = 64
#: most values in a policy after YAML aliases are expanded (real policies have a few hundred)
MAX_VALUES = 100_000
_PLAIN = (str, int, float, bool, type(None))


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, counting every bracket (quoted or not).

    PyYAML's scanner slows down quadratically with flow nesting (``[[[[...``: seconds for a few
    thousand levels) before its composer runs out of stack, so deep nesting is refused before
    parsing. Counting brackets inside strings too errs only towards refusing absurd files.
    """
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}" and depth:
            depth -= 1
    return deepest


def _check_plain(data: Any, source: str) -> None:
    """Refuse what YAML can express but a policy cannot use: values other than strings,
    numbers, booleans, null, lists and mappings (dates, binary, sets), structures that contain
    themselves, and alias chains that expand into more than :data:`MAX_VALUES` values."""
    budget = [MAX_VALUES]
    on_path: set[int] = set()

    def walk(value: Any, where: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise PolicyError(
                f"more than {MAX_VALUES} values once YAML aliases are expanded", source=source
            )
        if isinstance(value, _PLAIN):
            return
        if not isinstance(value, (list, dict)):
            raise PolicyError(
                f"unsupported YAML value of type {type(value).__name__}; "
                "quote it if it is meant as text",
                source=source,
                key_path=where or "<top>",
            )
        if id(value) in on_path:
            raise PolicyError(
                "a YAML alias refers to the value that contains it", source=source, key_path=where
            )
        on_path.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key, where)
                walk(item, f"{where}.{key}" if where else str(key))
        else:
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        on_path.discard(id(value))

    try:
        walk(data, "")
    except RecursionError:
        raise PolicyError("YAML aliases nest too deeply", source=source) from None


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False for a name the OS refuses (too long, say)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def load_policy(
    name_or_path: str,
    checks: Mapping[str, _HasOptions],
    *,
    extra_dirs: Iterable[Path] = (),
) -> Policy:
    """Load, resolve and validate a policy.

    :param name_or_path: a shipped policy's name (``production``) or a path to a YAML file.
    :param checks: the registered check plugins by name, whose option schemas are enforced.
    :param extra_dirs: further directories holding named policies (from plugins).
    """
    extra_dirs = list(extra_dirs)
    chain = _extends_chain(find_policy(name_or_path, extra_dirs=extra_dirs), extra_dirs)
    merged: dict[str, Any] = {}
    check_sources: dict[str, tuple[str, str]] = {}
    for path, raw in reversed(chain):  # root first, so the child's values win
        source = str(path)
        doc = validate(PolicyDocument, raw, source=source)
        merged = _merge(merged, raw, doc)
        validate(BackendOptions, merged.get("backend"), path="backend", source=source)
        validate(EvaluationSettings, merged.get("evaluation"), path="evaluation", source=source)
        _validate_checks(doc, merged["checks"], checks, source, check_sources)
        if doc.datasets is not None:  # relative paths are relative to the file that names them
            merged["datasets"] = [
                asdict(d) for d in _resolve_datasets(doc.datasets, path.parent, source)
            ]
    leaf_path, leaf_raw = chain[0]
    return _build(merged, leaf_path, leaf_raw, checks, [str(p) for p, _ in chain])


def _extends_chain(path: Path, extra_dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: list[Path] = []
    while True:
        resolved = path.resolve()
        if resolved in seen:
            cycle = " -> ".join(str(p) for p in [*seen, resolved])
            raise PolicyError(
                f"circular extends: {cycle}", source=str(chain[0][0]), key_path="extends"
            )
        seen.append(resolved)
        raw = load_policy_file(path)
        chain.append((path, raw))
        parent = raw.get("extends")
        if parent is None:
            return chain
        if not isinstance(parent, str):
            raise PolicyError(
                "expected a policy name or path", source=str(path), key_path="extends"
            )
        try:
            path = find_policy(parent, relative_to=path.parent, extra_dirs=extra_dirs)
        except PolicyError as exc:
            raise PolicyError(str(exc), source=str(chain[-1][0]), key_path="extends") from None


def _merge(base: dict[str, Any], raw: dict[str, Any], doc: PolicyDocument) -> dict[str, Any]:
    """The child's values over the parent's: mappings deep-merged, checks merged by id."""
    merged = copy.deepcopy(base)
    for key in ("name", "description", "on_inconclusive", "on_skip"):
        if key in raw:
            merged[key] = raw[key]
    for key in ("backend", "evaluation"):
        merged[key] = {**merged.get(key, {}), **(raw.get(key) or {})}
    if "datasets" in raw:
        merged["datasets"] = raw["datasets"]
    checks: list[dict[str, Any]] = merged.get("checks", [])
    by_key = {c.get("id") or c["use"]: c for c in checks}
    for entry, spec in zip(raw.get("checks") or [], doc.checks, strict=True):
        existing = by_key.get(spec.key)
        if existing is None:
            item = copy.deepcopy(entry)
            checks.append(item)
            by_key[spec.key] = item
        else:
            options = {**existing.get("options", {}), **(entry.get("options") or {})}
            existing.update(copy.deepcopy(entry))
            existing["options"] = options
    merged["checks"] = checks
    return merged


def _validate_checks(
    doc: PolicyDocument,
    merged_checks: list[dict[str, Any]],
    registry: Mapping[str, _HasOptions],
    source: str,
    check_sources: dict[str, tuple[str, str]],
) -> None:
    seen: set[str] = set()
    for index, spec in enumerate(doc.checks):
        path = f"checks[{index}]"
        if spec.key in seen:
            raise PolicyError(
                f"duplicate check id {spec.key!r}; give each entry a unique id",
                source=source,
                key_path=path,
            )
        seen.add(spec.key)
        if spec.use not in registry:
            raise PolicyError(
                f"no check plugin named {spec.use!r}{suggest(spec.use, registry)}; "
                f"installed checks: {', '.join(sorted(registry)) or 'none'} (see `qgate plugins`)",
                source=source,
                key_path=f"{path}.use",
            )
        validate_condition(spec.when, source=source, path=f"{path}.when")
        check_sources[spec.key] = (source, path)
    for entry in merged_checks:
        key = entry.get("id") or entry["use"]
        src, path = check_sources[key]
        if src == source:  # re-validate only what this file touched
            validate(
                registry[entry["use"]].Options,
                entry.get("options"),
                path=f"{path}.options",
                source=source,
            )


def _resolve_datasets(
    items: list[str | DatasetSpec], base_dir: Path, source: str
) -> list[DatasetSpec]:
    from qgate.datasets import BUILTIN_CORPORA

    specs = []
    for index, item in enumerate(items):
        spec = DatasetSpec(name=item) if isinstance(item, str) else item
        path = f"datasets[{index}]"
        if (spec.name is None) == (spec.path is None):
            raise PolicyError(
                "give exactly one of 'name' (a built-in corpus) or 'path'",
                source=source,
                key_path=path,
            )
        if spec.name is not None and spec.name not in BUILTIN_CORPORA:
            raise PolicyError(
                f"no built-in corpus {spec.name!r}{suggest(spec.name, BUILTIN_CORPORA)}; "
                f"built-in: {', '.join(BUILTIN_CORPORA)}",
                source=source,
                key_path=path,
            )
        if spec.path is not None:
            file = Path(spec.path)
            if not file.is_absolute():
                file = base_dir / file
            if not _is_file(file):
                raise PolicyError(
                    f"dataset file not found: {file}", source=source, key_path=f"{path}.path"
                )
            spec.path = str(file.resolve())
        specs.append(spec)
    return specs


def _build(
    merged: dict[str, Any],
    leaf_path: Path,
    leaf_raw: dict[str, Any],
    registry: Mapping[str, _HasOptions],
    files: list[str],
) -> Policy:
    source = str(leaf_path)
    doc = validate(PolicyDocument, merged, source=source)
    checks = [c for c in doc.checks if c.enabled]
    if not checks:  # a gate with no checks passes anything: never what was meant
        raise PolicyError(
            "the policy runs no checks (the list is empty or every entry is disabled), so it "
            "would pass any model; add at least one check",
            source=source,
            key_path="checks",
        )
    datasets = _resolve_datasets(doc.datasets or ["en"], leaf_path.parent, source)
    return Policy(
        name=leaf_raw.get("name") or leaf_path.stem,
        description=doc.description,
        source=source,
        on_inconclusive=doc.on_inconclusive or "warn",
        on_skip=doc.on_skip or "error",
        backend=validate(BackendOptions, doc.backend, path="backend", source=source),
        evaluation=validate(EvaluationSettings, doc.evaluation, path="evaluation", source=source),
        datasets=datasets,
        checks=checks,
        check_options={
            c.key: validate(
                registry[c.use].Options, c.options, path=f"checks[{c.key}].options", source=source
            )
            for c in checks
        },
        raw=merged,
        files=files,
    )
