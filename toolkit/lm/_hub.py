"""Weights from the Hugging Face Hub: ``hf:ORG/REPO/FILE.gguf[@REVISION]`` through ``huggingface_hub``.

``hf_hub_download`` does the work as every Hugging Face tool does it: its cache (``HF_HOME``,
``HF_HUB_CACHE``), a token from ``HF_TOKEN`` (or ``hf auth login``) for gated and private
repositories, offline mode (``HF_HUB_OFFLINE=1``: the cache only), another endpoint
(``HF_ENDPOINT``: a mirror), resumable downloads and a pinned revision (a branch, tag or commit;
default ``main``). The environment is read at each call (huggingface_hub reads it once, at import).
A GGUF file is stored with git LFS, so the hub gives its sha256 (the ETag) and the cache names its
blob by it: the file is checked against that name before use.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolkit.lm._weights import WeightsError, file_sha256

_SPEC = re.compile(r"([\w.-]+/[\w.-]+)/([^@\s]+?\.gguf)(?:@(\S+))?", re.IGNORECASE)
_SHA256 = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    repo: str  # ORG/NAME
    filename: str  # in the repository, folders included
    revision: str | None = None  # None: main

    def __str__(self) -> str:
        return f"hf:{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse(text: str) -> HubFile:
    """``ORG/REPO/FILE.gguf[@REVISION]`` (what follows ``hf:``) as a :class:`HubFile`."""
    match = _SPEC.fullmatch(text.removeprefix("//"))
    if match is None:
        raise WeightsError(f"hf:{text}: expected hf:ORG/REPO/FILE.gguf or hf:ORG/REPO/FILE.gguf@REVISION")
    return HubFile(*match.groups())


def cache_dir() -> Path:
    """The hub cache as huggingface_hub finds it: ``HF_HUB_CACHE``, else ``HF_HOME/hub``."""
    if env := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in (
        "1", "ON", "YES", "TRUE")


def download(text: str) -> Path:
    """The verified local path of ``hf:`` ``text``, downloaded (or resumed) into the hub cache if
    it is not there; every failure is one line (:class:`~toolkit.lm._weights.WeightsError`)."""
    from huggingface_hub import errors, hf_hub_download

    file = parse(text)
    where = f"the Hugging Face cache ({cache_dir()})"
    try:
        with _as_now():
            path = Path(hf_hub_download(file.repo, file.filename, revision=file.revision, cache_dir=cache_dir(),
                                        local_files_only=offline(), endpoint=os.environ.get("HF_ENDPOINT")))
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached"
        raise WeightsError(f"{file} is not in {where} and {why}: fetch it where the hub is reachable, "
                           "or copy the file here and use local:PATH") from None
    except errors.GatedRepoError:
        raise WeightsError(f"{file}: a gated repository: accept its terms on huggingface.co and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"{file}: no repository {file.repo} on the hub (a private one needs HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise WeightsError(f"{file}: no revision {file.revision} in {file.repo}") from None
    except errors.EntryNotFoundError:
        raise WeightsError(f"{file}: no file {file.filename} in {file.repo}") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{file}: download failed: {why}") from None
    verify(path, str(file))
    return path


def hub_sha256(path: Path) -> str | None:
    """The sha256 the hub gave for the cached file ``path``: its blob's name when it is one (a git
    LFS file; a small file kept in git is named by its git hash, and gets None)."""
    blob = path.resolve().name
    return blob if _SHA256.fullmatch(blob) else None


def verify(path: Path, label: str) -> None:
    """Raise if the cached file's sha256 is not the hub's (checked once per file, size and mtime)."""
    expected = hub_sha256(path)
    if expected is not None and (actual := file_sha256(path)) != expected:
        raise WeightsError(f"{label}: sha256 mismatch: the hub says {expected}, the cached file "
                           f"({path.resolve()}) has {actual}: delete it and fetch again")


def cached_files() -> list[tuple[str, Path]]:
    """``(hf: spec, path)`` of every GGUF file in the hub cache, one per revision (no revision in
    the spec when it is the one ``main`` points to)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir())
    except (CacheNotFound, OSError):
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            pin = "" if "main" in revision.refs else f"@{revision.commit_hash}"
            for cached in sorted(revision.files, key=lambda f: str(f.file_path)):
                name = cached.file_path.relative_to(revision.snapshot_path).as_posix()
                if name.lower().endswith(".gguf"):
                    found.append((f"hf:{repo.repo_id}/{name}{pin}", cached.file_path))
    return found


@contextmanager
def _as_now() -> Iterator[None]:
    """huggingface_hub as the environment is now (offline mode: no request at all, its own
    best-effort ones included), its retry warnings muted (the outcome is one line either way)."""
    from huggingface_hub import constants

    logger = logging.getLogger("huggingface_hub")
    level, was_offline = logger.level, constants.HF_HUB_OFFLINE
    logger.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = offline()
    try:
        yield
    finally:
        logger.setLevel(level)
        constants.HF_HUB_OFFLINE = was_offline
