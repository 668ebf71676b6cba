"""The committed notebooks: at least seven, each with a `parameters` cell (papermill-compatible, for
the smoke size), small (the whole folder under 3 MB with outputs), and their outputs hold no absolute
path of the machine that ran them and no Jupyter token (``bash scripts/refresh-notebooks`` runs them
and scrubs both). Run under nbmake they execute; here they are only read."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
LIMIT = 3 * 1024 * 1024
BINARY = {"image/png", "image/jpeg", "image/gif", "application/pdf"}  # base64: '/tmp/' can occur by chance
ABSOLUTE = re.compile(r"/work/|/tmp/|/var/tmp/|/var/folders/|/root\b|/home/|/Users/|\b[A-Z]:\\Users\\")
TOKEN = re.compile(r"token=(?!<token>)[0-9A-Za-z_\-]{8,}|(?<![0-9a-f])[0-9a-f]{48}(?![0-9a-f])")


def _files() -> list[Path]:
    """The folder's committed files (git's view: what a clone gets), else every file in it."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", str(NOTEBOOKS)], cwd=REPO, capture_output=True,
                             check=True, timeout=60).stdout.decode()
        files = [REPO / f for f in out.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    return [f for f in files if f.exists()] or [f for f in NOTEBOOKS.rglob("*") if f.is_file()
                                               and ".ipynb_checkpoints" not in f.parts]


NOTEBOOK_FILES = sorted(f for f in _files() if f.suffix == ".ipynb")


def _strings(value, where: str = ""):
    """(where, text) of every string in outputs or metadata, binary payloads left out."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in BINARY and k != "buffers":
                yield from _strings(v, f"{where}.{k}")


def _committed_text(path: Path):
    """(where, text) of what running the notebook added: outputs, cell and notebook metadata."""
    notebook = json.loads(path.read_text())
    yield from _strings(notebook.get("metadata", {}), "metadata")
    for i, cell in enumerate(notebook["cells"]):
        yield from _strings(cell.get("metadata", {}), f"cell {i} metadata")
        yield from _strings(cell.get("outputs", []), f"cell {i} outputs")


def test_at_least_seven_notebooks_each_with_a_parameters_cell() -> None:
    assert len(NOTEBOOK_FILES) >= 7, [f.name for f in NOTEBOOK_FILES]
    for path in NOTEBOOK_FILES:
        cells = json.loads(path.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), \
            f"{path.name}: no cell tagged `parameters`"


def test_the_notebooks_folder_stays_under_3_mb() -> None:
    sizes = {f.relative_to(NOTEBOOKS).as_posix(): f.stat().st_size for f in _files()}
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert sum(sizes.values()) < LIMIT, f"{sum(sizes.values()) / 2**20:.2f} MB; the largest: {biggest}"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_no_output_holds_an_absolute_path_or_a_token(path: Path) -> None:
    mine = {str(REPO), str(REPO.parent), str(Path.home())} - {"/", ""}
    found = []
    for where, text in _committed_text(path):
        for match in (ABSOLUTE.search(text), TOKEN.search(text),
                      *(re.search(re.escape(m) + r"(?![\w.\-])", text) for m in mine)):
            if match:
                found.append(f"{where}: ...{text[max(0, match.start() - 60):match.end() + 60]}...")
    assert not found, f"{path.name} (bash scripts/refresh-notebooks scrubs these):\n" + "\n".join(found[:10])


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_no_committed_output_is_an_error(path: Path) -> None:
    cells = json.loads(path.read_text())["cells"]
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(cells)
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors


def test_the_refresh_script_scrubs_paths_and_tokens(tmp_path: Path) -> None:
    """`scripts/refresh-notebooks --scrub-only FOLDER`: the scrubbing step alone, on outputs that hold
    this repository's path, a temporary store, the home folder and a server URL with its token."""
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: bash scripts/setup --dev")
    token = "0123456789abcdef" * 3
    text = (f"{REPO}/toolkit/store.py:12: warning\nstore sqlite:////tmp/tmpab12_cd/notebook.db\n"
            f"{Path.home()}/.cache/batchx/models/x.gguf\nhttp://127.0.0.1:8888/lab?token={token}\n")
    notebook = {"cells": [{"cell_type": "code", "execution_count": 1, "id": "a1", "source": "print()",
                           "metadata": {"execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"}},
                           "outputs": [{"output_type": "stream", "name": "stdout", "text": text},
                                       {"output_type": "display_data", "metadata": {},
                                        "data": {"text/plain": f"'{REPO.parent}/shared/corpora'",
                                                 "image/png": "iVBO"}}]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "n.ipynb").write_text(json.dumps(notebook))
    run = subprocess.run(["bash", str(REPO / "scripts" / "refresh-notebooks"), "--scrub-only", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    cell = json.loads((tmp_path / "n.ipynb").read_text())["cells"][0]
    scrubbed = "".join(cell["outputs"][0]["text"])
    assert scrubbed == ("<repo>/toolkit/store.py:12: warning\nstore sqlite:///<tmp>/notebook.db\n"
                        "~/.cache/batchx/models/x.gguf\nhttp://127.0.0.1:8888/lab?token=<token>\n")
    data = cell["outputs"][1]["data"]
    assert "".join(data["text/plain"]) == "'<repo>/../shared/corpora'" and data["image/png"] == "iVBO"
    assert "execution" not in cell["metadata"]
    for _, value in _strings(cell["outputs"]):
        assert not ABSOLUTE.search(value) and not TOKEN.search(value), value


CODE_LINES = 30  # "under about 30": a notebook reads like a short script over tested toolkit functions


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_no_notebook_reaches_outside_the_repository_and_each_stays_a_short_script(path: Path) -> None:
    """Gold corpora are found by name (``toolkit.corpora.gold_corpus``: the registry, ``BATCHX_GOLD``),
    never by a relative path such as ``../../shared``; the code cells total at most CODE_LINES
    non-blank lines."""
    cells = json.loads(path.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells]
    assert not [s for s in sources if "../" in s], f"{path.name}: a path outside the notebooks folder"
    code = sum(1 for c, s in zip(cells, sources) if c["cell_type"] == "code" for line in s.splitlines()
               if line.strip())
    assert code <= CODE_LINES, f"{path.name}: {code} lines of code in its cells"


def test_committed_extraction_and_quality_outputs_come_from_the_local_model_and_say_so() -> None:
    """The committed outputs a reader judges extraction by (02's entities, 05's viewer, 03's quality)
    were produced by the real local model, and each says so in its output; the emulated provider's
    stand-in entities are never committed as extraction."""
    said = {"02_extract.ipynb": "extracted by local (", "05_entities.ipynb": "extracted by local (",
            "03_measure.ipynb": "quality of local ("}
    for name, line in said.items():
        texts = [text for _, text in _committed_text(NOTEBOOKS / name)]
        assert any(line in text for text in texts), f"{name}: no output says {line!r}"
        assert not any("extracted by emulated" in text or "'emulated': True" in text for text in texts), name
