"""A compiled program: what a DSPy optimizer chose for each pass's predictor (its worked examples,
its instructions), saved with the settings it was compiled for (``python -m toolkit optimize``)
and loaded by ``--program`` (``ExtractionSettings.program``) on every extracting command.

The file is JSON: ``format``, ``settings`` (the prompt's shape: entity types, relationships,
passes), ``meta`` (optimizer, gold splits, scores) and ``state``, the module's DSPy state
(:meth:`dspy.Module.dump_state`). A program applies only to settings of the same shape, and the
documents it shows are kept out of any evaluation (:func:`demo_ids`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
SHAPE = ("entity_types", "relationships", "passes")  # settings a program must match


@dataclass(frozen=True)
class Program:
    path: str
    settings: Mapping[str, Any]
    state: Mapping[str, Any]
    meta: Mapping[str, Any]

    def demo_ids(self) -> set[str]:
        """The ids of every document the program's predictors show as a worked example."""
        return {str(d.get("id")) for predictor in self.state.values() for demo in predictor.get("demos", [])
                for d in demo.get("documents") or [] if isinstance(d, Mapping)}

    def check(self, settings: Mapping[str, Any]) -> None:
        """Raise unless ``settings`` have the shape the program was compiled for."""
        differ = [k for k in SHAPE if _plain(settings.get(k)) != _plain(self.settings.get(k))]
        if differ:
            raise ValueError(f"{self.path} was compiled for other settings: "
                             + "; ".join(f"{k} {self.settings.get(k)!r}, asked {settings.get(k)!r}" for k in differ))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def save_program(path: str | Path, settings: Mapping[str, Any], state: Mapping[str, Any],
                 meta: Mapping[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "settings": {k: _plain(settings.get(k)) for k in SHAPE}, "meta": dict(meta),
            "state": dict(state)}
    out.write_text(json.dumps(body, indent=1, ensure_ascii=False, default=str) + "\n")
    return out


def load_program(path: str | Path) -> Program:
    """The program at ``path``; a clear error if it is missing or not a program file."""
    source = Path(path)
    try:
        body = json.loads(source.read_text())
    except FileNotFoundError:
        raise ValueError(f"program file not found: {source} (write one with `python -m toolkit optimize`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source} is not a program file: {error}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("state"), dict):
        raise ValueError(f"{source} is not a program file of format {FORMAT} (written by `python -m toolkit optimize`)")
    return Program(str(source), body.get("settings") or {}, body["state"], body.get("meta") or {})
