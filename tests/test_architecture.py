"""The layering and the size of the pieces, checked: import contracts (pyproject.toml, run by
import-linter), no module over 400 lines, no class over 200 lines, no block of six lines twice."""

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
def test_modules_and_classes_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 400, f"{path.name}: {source.count(chr(10))} lines (at most 400)"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= 200, f"{path.name}: class {node.name} has {size} lines (at most 200)"


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
        if text and not text.startswith(("#", "import ", "from ")) and number not in prose and text not in (")", "]", "}"):
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
