"""A provider's profile: its latencies, rate limits and prompt cache, as the planner, the tuner,
calibration and the emulated provider read it (``toolkit/lm/profiles/*.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from toolkit.lm._prefixcache import LAST_PROMPT, CacheRules

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class Profile:
    """Latency and limits of one provider. ``parallel_slots`` None = unlimited parallel calls.
    ``cache``: its prompt cache's rules (:class:`~toolkit.lm._prefixcache.CacheRules`, a dict in
    JSON); ``prompt_cache: true`` without rules caches any shared prefix for ever."""

    name: str
    overhead_seconds: float
    prompt_tokens_per_second: float
    output_tokens_per_second: float
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    prompt_cache: bool = False
    parallel_slots: int | None = None
    context_window: int | None = None
    faults: dict[str, float] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    fit: dict[str, Any] = field(default_factory=dict)  # calibration details, when fitted
    tokenizer: str | None = None  # whose tokens the rates count (a model name, or local:MODEL)
    prompt_seconds_per_token_sq: float = 0.0  # extra cost of long prompts (attention on a CPU)
    speed: float = 1.0  # time runs this many times faster: every latency, wait and rate-limit window divided by it
    priced_as: str | None = None  # the model whose prices its calls cost (toolkit.core._pricing); None: unpriced
    cache: CacheRules | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache", CacheRules.of(self.cache))
        if self.prompt_tokens_per_second <= 0 or self.output_tokens_per_second <= 0 or self.overhead_seconds < 0:
            raise ValueError(f"profile {self.name!r}: rates must be positive and overhead non-negative")
        if self.speed <= 0:
            raise ValueError(f"profile {self.name!r}: speed must be positive")
        from toolkit.core import Faults

        Faults(**self.faults)  # validates names and total

    def call_seconds(self, prompt_tokens: float, output_tokens: float) -> float:
        """Seconds a call takes (at this profile's speed)."""
        return (self.overhead_seconds + prompt_tokens / self.prompt_tokens_per_second
                + prompt_tokens ** 2 * self.prompt_seconds_per_token_sq
                + output_tokens / self.output_tokens_per_second) / self.speed

    @property
    def cache_rules(self) -> CacheRules | None:
        """Its prompt cache's rules; None: it has none."""
        return self.cache or (LAST_PROMPT if self.prompt_cache else None)

    @property
    def window(self) -> float:
        """The rate-limit window: a minute, at this profile's speed."""
        return 60.0 / self.speed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown profile keys: {sorted(unknown)}")
        return cls(**data)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name, or a JSON file (e.g. one written by ``calibrate --out``);
    ``NAME@SPEED`` runs it ``SPEED`` times faster (``hosted-api@100``)."""
    name_or_path, at, speed = name_or_path.rpartition("@") if "@" in name_or_path else (name_or_path, "", "")
    if at:
        try:
            factor = float(speed)
        except ValueError:
            raise ValueError(f"profile speed must be a number: {name_or_path}@{speed}") from None
        return replace(load_profile(name_or_path), speed=factor)
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ValueError(f"unknown emulated profile {name_or_path!r}; shipped: {', '.join(available_profiles())}")
    return Profile.from_dict(json.loads(path.read_text()))
