"""Where the toolkit keeps its caches (tokenizer files, model weights, corpora)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # toolkit/
DATA_DIR = PACKAGE_DIR.parent / "data"  # manifests and small samples shipped with the repo
RESULTS_DIR = PACKAGE_DIR.parent / "benchmarks" / "results"  # the committed measured runs (docs/measurements.md)


def cache_dir() -> Path:
    """``$BATCHX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/batchx`` or ``~/.cache/batchx``."""
    if env := os.environ.get("BATCHX_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "batchx"


def shared_dir() -> Path | None:
    """The workplace's shared folder (gold corpora): ``$BATCHX_SHARED_DIR`` or ``../shared`` beside
    the repository, if it exists. Read from, never copied into the repo."""
    env = os.environ.get("BATCHX_SHARED_DIR")
    candidate = Path(env).expanduser() if env else PACKAGE_DIR.parent.parent / "shared"
    return candidate if candidate.is_dir() else None
