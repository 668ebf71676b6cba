"""The layering and the size of the pieces, checked: the folders are the layers (import contracts in
pyproject.toml, run by import-linter), a package is entered through its ``__init__`` (no private
submodule or ``_name`` imported across), no module over 400 lines, no class over 150 lines, no
function over 60 lines, no block of six lines twice."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted((REPO / "toolkit").rglob("*.py"))


def test_the_import_contracts_hold() -> None:
    """Layers from the CLI down to the leaf modules; the executor imports nothing that knows LLMs."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("import-linter is not installed: bash scripts/setup --dev")
    out = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" not in out.stdout.lower().split("contracts:")[-1].replace("0 broken", "")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_classes_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 400, f"{path.name}: {source.count(chr(10))} lines (at most 400)"
    limits = {ast.ClassDef: ("class", 150), ast.FunctionDef: ("function", 60), ast.AsyncFunctionDef: ("function", 60)}
    for node in ast.walk(ast.parse(source)):
        if type(node) in limits:
            what, most = limits[type(node)]
            size = node.end_lineno - node.lineno + 1
            assert size <= most, f"{path.name}: {what} {node.name} has {size} lines (at most {most})"


def test_the_folders_are_the_layers() -> None:
    """``ls toolkit`` shows the layers: a handful of packages, no loose modules but the entry points."""
    entries = sorted(p.name for p in (REPO / "toolkit").iterdir() if p.name != "__pycache__")
    assert len(entries) <= 16, entries
    loose = [name for name in entries if name.endswith(".py") and name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside a layer folder: {loose}"
    for package in (p for p in (REPO / "toolkit").iterdir() if (p / "__init__.py").exists()):
        public = [m.name for m in package.glob("*.py") if not m.name.startswith("_") and m.name not in RUNNABLE]
        assert not public, f"{package.name}: public submodules {public} (make them private behind __init__)"


RUNNABLE = ("llamaserver.py", "server.py")  # entry points for ``python -m``, imported by no other package


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owner(module: str) -> str:
    """The package a dotted module belongs to: everything before its first private part."""
    parts = module.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_") and part != "__init__"), len(parts))
    return ".".join(parts[:private])


def _private_imports(path: Path) -> list[str]:
    """This module's imports of another package's private submodule, or of a ``_name`` defined in
    another module (a private submodule of its own package, imported as a module, is fine)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("toolkit")):
            continue
        targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                                   and (REPO / (f"{node.module}.{a.name}".replace(".", "/") + ".py")).exists()]
        for target in targets:
            owner = _owner(target)
            if owner != target and owner != package and not package.startswith(owner + "."):
                found.append(f"line {node.lineno}: {target} (private to {owner})")
        for alias in node.names:
            sub = REPO / (f"{node.module}.{alias.name}".replace(".", "/") + ".py")
            if alias.name.startswith("_") and not alias.name.startswith("__") and not sub.exists():
                found.append(f"line {node.lineno}: {alias.name} from {node.module}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_packages_are_entered_through_their_init(path: Path) -> None:
    assert not _private_imports(path), f"{path.relative_to(REPO)}: " + "; ".join(_private_imports(path))


def test_the_privacy_check_catches_what_it_forbids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above is not vacuous: each forbidden import is caught, each allowed one is not."""
    module = REPO / "toolkit" / "jobs" / "_probe_for_test.py"
    cases = {"from toolkit.execution._stream import ExecutionStream": True,  # another package's private module
             "from toolkit.plan._planner import predict": True,
             "from toolkit.jobs._service import _helper": True,  # a _name across modules, same package
             "from toolkit.jobs._service import ExtractionService": False,  # a sibling, by private path
             "from toolkit.execution import ExecutionStream": False,  # through the package
             "from toolkit.jobs.batchapi._runner import BatchApiRunner": True}  # a subpackage's private module
    try:
        for line, forbidden in cases.items():
            module.write_text(line + "\n")
            assert bool(_private_imports(module)) is forbidden, line
    finally:
        module.unlink(missing_ok=True)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are code: no blanks, comments, imports or
    docstring lines (a docstring is prose, repeated on purpose where two things share a contract)."""
    tree = ast.parse(path.read_text())
    prose: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            prose.update(range(body[0].lineno, body[0].end_lineno + 1))
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if (text and not text.startswith(("#", "import ", "from ")) and number not in prose
                and text not in (")", "]", "}")):
            out.append((number, text))
    return out


def test_no_block_of_six_code_lines_appears_twice() -> None:
    seen: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in MODULES:
        lines = _code_lines(path)
        for i in range(len(lines) - 5):
            block = tuple(text for _, text in lines[i:i + 6])
            seen[block].append(f"{path.relative_to(REPO)}:{lines[i][0]}")
    repeated = {block: where for block, where in seen.items() if len(where) > 1}
    assert not repeated, "\n\n".join(f"{', '.join(where)}:\n" + "\n".join(block) for block, where in repeated.items())
