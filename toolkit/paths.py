"""Where the toolkit keeps its caches (tokenizer files, model weights, corpora)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR.parent / "data"  # manifests and small samples shipped with the repo


def cache_dir() -> Path:
    """``$BATCHX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/batchx`` or ``~/.cache/batchx``."""
    if env := os.environ.get("BATCHX_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "batchx"
