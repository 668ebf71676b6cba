"""What a user can run on the local model, for ``models list``: the registered models, other GGUF
files in the model cache, GGUF files in the Hugging Face cache and any files named, each with its
size, quantisation, sha256, whether the exact parallel layout is available (and why not), and the
tokens per second a ``calibrate`` run measured on it, where one did.

Measured speeds are read from calibrated profiles: those shipped with the toolkit, those under
``<cache>/calibrations`` (:func:`remember_calibration`) and the repository's
``benchmarks/results/*/profile.json``, matched to a file by the sha256 in the profile's model id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toolkit.core import RESULTS_DIR, cache_dir
from toolkit.lm import _weights as weights
from toolkit.lm._exactness import exact_layout
from toolkit.lm._profiles import PROFILE_DIR

_MODEL_ID = re.compile(r"@sha256:([0-9a-f]{16})(\+fast)?$")


def calibrations_dir() -> Path:
    return cache_dir() / "calibrations"


def remember_calibration(profile: dict[str, Any]) -> Path:
    """Keep a calibrated profile (``calibrate``'s) where ``models list`` finds it; its path."""
    model_id = (profile.get("fit") or {}).get("model_id") or profile.get("name", "profile")
    target = calibrations_dir() / (re.sub(r"[^\w.+-]", "_", model_id) + ".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(profile, indent=2) + "\n")
    return target


def measured_speeds(extra: Iterable[Path] = ()) -> dict[str, dict[str, Any]]:
    """Per weights (the first 16 digits of their sha256): the prompt and output tokens/s of the
    newest calibrated profile (one of ``local:...:fast`` only if there is no other), the model id
    it recorded and where it was read."""
    paths = [*sorted(PROFILE_DIR.glob("*.json")),
             *sorted(RESULTS_DIR.glob("*/profile.json")),
             *sorted(calibrations_dir().glob("*.json")), *extra]
    found: dict[str, tuple[tuple[bool, float], dict[str, Any]]] = {}
    for path in paths:
        try:
            profile = json.loads(path.read_text())
            match = _MODEL_ID.search(str((profile.get("fit") or {}).get("model_id", "")))
        except (OSError, ValueError, AttributeError):
            continue
        if match is None:
            continue
        rank = (match.group(2) is None, path.stat().st_mtime)
        speeds = {"prompt_tokens_per_second": profile.get("prompt_tokens_per_second"),
                  "output_tokens_per_second": profile.get("output_tokens_per_second"),
                  "overhead_seconds": profile.get("overhead_seconds"), "model_id": profile["fit"]["model_id"],
                  "profile": str(path)}
        if match.group(1) not in found or rank > found[match.group(1)][0]:
            found[match.group(1)] = (rank, speeds)
    return {key: speeds for key, (_, speeds) in found.items()}


def list_runnable(paths: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per model a user can run (see the module docstring); ``paths``: more GGUF files
    (or ``hf:`` names) to describe. Missing registered models are listed with how to fetch them."""
    speeds = measured_speeds()
    rows = []
    for spec in weights.MODELS.values():
        path = weights.cached_path(spec.name)
        row = {"lm": f"local:{spec.name}", "kind": "registered", "name": spec.name,
               "default": spec.name == weights.DEFAULT_MODEL, "description": spec.description,
               "license": spec.license, "size_mb": round(spec.size / 1e6, 1), "sha256": spec.sha256,
               "cached": path is not None, "path": str(path or weights.model_dir() / spec.filename)}
        rows.append({**row, **_describe(path, spec.sha256, speeds)})
    registered = {spec.filename for spec in weights.MODELS.values()}
    files = [(f"local:{p}", "file", p) for p in sorted(weights.model_dir().glob("*.gguf")) if p.name not in registered]
    from toolkit.lm import _hub as hub

    files += [(f"local:{spec}", "hf", p) for spec, p in hub.cached_files()]
    for named in paths:
        files.append((f"local:{named}", "named", weights.locate(named).path))
    for lm, kind, path in files:
        digest = hub.hub_sha256(path) if kind == "hf" else None
        digest = digest or weights.file_sha256(path)
        row = {"lm": lm, "kind": kind, "name": path.stem, "size_mb": round(path.stat().st_size / 1e6, 1),
               "sha256": digest, "cached": True, "path": str(path)}
        rows.append({**row, **_describe(path, digest, speeds)})
    return rows


def _describe(path: Path | None, digest: str, speeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Quantisation, architecture and exactness from the file's header (None when not cached or
    not readable), and its measured speed."""
    out: dict[str, Any] = {"quantisation": None, "architecture": None, "context_length": None,
                           "exact_layout": None, "exact_reason": None, "measured": speeds.get(digest[:16])}
    if path is None:
        return out
    try:
        header = weights.header_of(path)
    except (ValueError, OSError) as exc:
        return {**out, "exact_layout": False, "exact_reason": f"unreadable: {exc}"}
    verdict = exact_layout(header)
    reason = verdict.reason if header.chat_template else "no chat template (a base model?): it cannot run here"
    return {**out, "quantisation": header.file_type, "architecture": header.architecture,
            "context_length": header.context_length, "exact_layout": verdict.exact and bool(header.chat_template),
            "exact_reason": reason}
