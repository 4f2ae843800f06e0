"""The house rules of qgate's source tree, checked so they stay true.

- Small units: no module over 500 lines, no function over 80 (tests excepted).
- Layering: the core (``qgate``) imports no plugin; a plugin imports the core, its own modules
  and the declared shared libraries, never another plugin's modules.
- The repository stands alone: nothing points at design notes or files outside it.
- docs/architecture.md and the README's layout name every plugin package that is installed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: libraries shared by several plugins (no entry point of their own): a plugin may import them
SHARED_LIBRARIES = frozenset({"qgate_transformers"})


def packages() -> dict[str, Path]:
    """Every first-party top-level package and where it lives: ``qgate``, and each plugin
    mapped in pyproject.toml's ``[tool.setuptools.package-dir]``."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    table = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    found = {"qgate": REPO / "qgate"}
    for name, folder in re.findall(r'^"([\w.]+)"\s*=\s*"([^"]+)"', table, flags=re.M):
        if "." not in name:
            found[name] = REPO / folder
    return found


def sources() -> Iterator[tuple[str, Path]]:
    for package, folder in packages().items():
        for path in sorted(folder.rglob("*.py")):
            yield package, path


def imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_modules_and_functions_are_small() -> None:
    too_long = []
    for _, path in sources():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{relative(path)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{relative(path)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long


def test_the_core_imports_no_plugin_and_plugins_only_the_core_and_shared_libraries() -> None:
    first_party = set(packages())
    wrong = []
    for package, path in sources():
        for module in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            top = module.split(".")[0]
            if top not in first_party or top in (package, "qgate"):
                continue
            if package == "qgate" or top not in SHARED_LIBRARIES:
                wrong.append(f"{relative(path)} imports {module}")
    assert not wrong


def test_plugins_reach_the_engine_only_through_the_check_context() -> None:
    wrong = [
        f"{relative(path)} imports {module}"
        for package, path in sources()
        if package != "qgate"
        for module in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        if module == "qgate.engine" or module.startswith("qgate.engine.")
    ]
    assert not wrong


@pytest.mark.parametrize("pattern", [r"DESIGN\.md", r"\.\./shared", r"/work/shared"])
def test_nothing_points_outside_the_repository(pattern: str) -> None:
    offenders = [
        relative(p)
        for p in repository_files()
        if p != Path(__file__)  # the patterns themselves
        and re.search(pattern, p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not offenders


def repository_files() -> Iterator[Path]:
    """The repository's text files: hidden folders (caches, virtual environments, local
    staging) are not the repository, except ``.github`` and ``.ci``."""
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".j2", ".txt", ""}
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        hidden = any(p.startswith(".") and p not in (".github", ".ci") for p in parts)
        generated = any(p in ("build", "dist") or p.endswith(".egg-info") for p in parts)
        if path.is_file() and path.suffix in suffixes and not hidden and not generated:
            yield path


def test_the_architecture_page_and_the_readme_name_every_plugin_package() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [
        f"{page}: {package}"
        for package, folder in packages().items()
        if package != "qgate"
        for page, text in (("docs/architecture.md", architecture), ("README.md", readme))
        if relative(folder) not in text
    ]
    assert not missing


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """A non-editable install ships only the packages pyproject.toml lists: a new sub-package
    that is not listed works in a checkout and is missing from the wheel."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(
        re.findall(r'^\s+"([\w.]+)",$', text.split("packages = [", 1)[1].split("]")[0], flags=re.M)
    )
    found = {
        ".".join([package, *init.parent.relative_to(folder).parts])
        for package, folder in packages().items()
        for init in folder.rglob("__init__.py")
    }
    assert found - listed == set()
