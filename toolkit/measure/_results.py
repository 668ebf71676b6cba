"""What ``eval`` and ``bench`` return: frozen values, turned into JSON only where a file is written or
read (``results.json``, the CLI's ``--json``).

Each reads committed results with ``from_json`` (a mapping or a path), old files without the keys
added since included, and writes them back with ``to_json``: the same keys in the same order (a key
the type does not name is kept in ``extra``). Bench results written before configurations were a list
kept them in a mapping by name; they are read as a list, in that order (and written back as they were).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from toolkit.core import FIELDS, Counts
from toolkit.extraction import ExtractionSettings

JsonObject = dict[str, Any]
Interval = tuple[float, float]
INTERVALS = ("strict_f1_ci", "lenient_f1_ci", "f1_ratio_ci", "f1_drop_ci", "speedup_ci")
BATCH_API = "batch_api_"  # a configuration's calls through a batch API: batch_api_<count>
R = TypeVar("R", bound="_Result")


def plain(value: Any) -> Any:
    """``value`` as JSON has it: tuples as lists, results and figures as their JSON objects."""
    if isinstance(value, (ConfigFigures, _Result)):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def read_json(data_or_path: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """A JSON object, or the one in the file at a path."""
    if isinstance(data_or_path, Mapping):
        return data_or_path
    return json.loads(Path(data_or_path).read_text())


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "keys", "configs_by_name"))


@dataclass(frozen=True)
class ConfigFigures:
    """One configuration's figures in an eval or a bench: what became of its documents, its counts
    (``counts``: every :class:`~toolkit.core.Counts` field, a key each in JSON), seconds and speed, cost;
    in an eval its quality against gold and one document per call (``f1_by_type``: the keys
    ``f1_<TYPE>``), in a bench its prompt cache and the share of the rate limits' bound it reached.
    A figure a run did not have is None (and absent from its JSON)."""

    config: str = ""
    max_docs: int = 1
    budget: int = 0
    concurrency: str = "1"
    seconds: float | None = None
    documents: int = 0
    extracted: int = 0
    failed: int = 0
    pending: int = 0
    lost: int = 0
    entities_per_doc: float | None = None
    zero_entity_docs: int | None = None
    batches: int = 0
    counts: Counts = field(default_factory=Counts)
    grounded_rate: float | None = None
    budget_tokens_ok: int | None = None
    docs_per_second: float | None = None
    docs_per_min_while_calling: float | None = None
    rate_limits: Mapping[str, Any] | None = None
    output_sd_per_doc: float | None = None
    batch_api: Counts | None = None  # of ``counts``, the calls made through a provider's batch API
    cost_usd: float | None = None
    cost_per_1k_docs: float | None = None
    priced_as: str | None = None
    cost_note: str | None = None
    strict_precision: float | None = None
    strict_recall: float | None = None
    strict_f1: float | None = None
    lenient_precision: float | None = None
    lenient_recall: float | None = None
    lenient_f1: float | None = None
    agreement_f1: float | None = None
    speedup: float | None = None
    f1_vs_reference: float | None = None
    strict_f1_by_pass: Sequence[float] | None = None  # strict F1 of what the passes up to each one found
    strict_f1_ci: Interval | None = None
    lenient_f1_ci: Interval | None = None
    f1_ratio_ci: Interval | None = None
    f1_drop_ci: Interval | None = None
    speedup_ci: Interval | None = None
    f1_by_type: Mapping[str, float | None] = field(default_factory=dict)
    prompt_cache: bool | None = None
    rate_limit_bound_docs_per_min: float | None = None
    bound_share: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the JSON's keys, in order

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfigFigures:
        """A configuration as a results file has it (any figure may be missing)."""
        named: dict[str, Any] = {}  # JSON values, checked by the dataclass's fields
        counts: dict[str, Any] = {}
        batch: dict[str, Any] = {}
        by_type: dict[str, float | None] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in _FIGURES:
                named[key] = tuple(value) if key in INTERVALS and value is not None else value
            elif key in FIELDS:
                counts[key] = value
            elif key.startswith(BATCH_API) and key[len(BATCH_API):] in FIELDS:
                batch[key[len(BATCH_API):]] = value
            elif key.startswith("f1_"):
                by_type[key[3:]] = value
            else:
                extra[key] = value
        return cls(**named, counts=Counts(**counts), batch_api=Counts(**batch) if batch else None,
                   f1_by_type=by_type, extra=extra, keys=tuple(data))

    def to_json(self) -> JsonObject:
        keys = self.keys or (*_FIGURES[:13], *FIELDS, *_FIGURES[13:], *(f"f1_{t}" for t in self.f1_by_type),
                             *(f"{BATCH_API}{k}" for k in (FIELDS if self.batch_api else ())), *self.extra)
        return {key: plain(self.figure(key)) for key in keys}

    def figure(self, key: str) -> Any:
        """The figure its JSON keeps under ``key`` (a count, ``f1_DISEASE``, ``batch_api_calls``, ...)."""
        if key in _FIGURES:
            return getattr(self, key)
        if key in FIELDS:
            return getattr(self.counts, key)
        if key.startswith(BATCH_API) and self.batch_api is not None and key[len(BATCH_API):] in FIELDS:
            return getattr(self.batch_api, key[len(BATCH_API):])
        if key.startswith("f1_") and key[3:] in self.f1_by_type:
            return self.f1_by_type[key[3:]]
        return self.extra[key]

    def with_figures(self, **figures: Any) -> ConfigFigures:
        """These figures with ``figures`` (JSON keys) set or added after them."""
        return ConfigFigures.from_json({**self.to_json(), **figures})

    @property
    def tokens_out_per_doc(self) -> float | None:
        """Output tokens per extracted document."""
        return self.counts.tokens_out / self.extracted if self.extracted else None


_FIGURES = tuple(n for n in _names(ConfigFigures) if n not in ("counts", "batch_api", "f1_by_type"))


def configurations(data: Mapping[str, Any]) -> tuple[ConfigFigures, ...]:
    """A result's ``configs`` as figures, in the order they ran (a mapping by name in old bench results)."""
    configs = data.get("configs") or []
    if isinstance(configs, Mapping):
        configs = [c if "config" in c else {"config": name, **c} for name, c in configs.items()]
    return tuple(ConfigFigures.from_json(c) for c in configs)


@dataclass(frozen=True)
class _Result:
    """Shared by eval and bench results: the model, the prompt's settings, the configurations, the calls."""

    ORDER: ClassVar[tuple[str, ...]] = ()  # the JSON's keys, in the order a run writes them
    kind: str = ""
    lm: str = ""
    model_id: str | None = None
    configs: tuple[ConfigFigures, ...] = ()
    calls: tuple[JsonObject, ...] = ()  # one row per LM call (none for an emulated LM)
    capabilities: Mapping[str, Any] | None = None
    settings: Mapping[str, Any] | None = None
    machine: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)
    configs_by_name: bool = field(default=False, compare=False, repr=False)  # as bench results before lists

    @classmethod
    def from_json(cls: type[R], data_or_path: Mapping[str, Any] | str | Path) -> R:
        """A result as a ``results.json`` has it (a mapping, or the path of the file)."""
        data = read_json(data_or_path)
        names = set(_names(cls))
        named = {k: v for k, v in data.items() if k in names}
        named.update(configs=configurations(data), calls=tuple(data.get("calls") or ()))
        named.update(cls._read(data))
        extra = {k: v for k, v in data.items() if k not in names and not cls._grouped(k)}
        return cls(**named, extra=extra, keys=tuple(data), configs_by_name=isinstance(data.get("configs"), Mapping))

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def _grouped(cls, key: str) -> bool:
        return False

    def _order(self) -> tuple[str, ...]:
        return self.ORDER

    def __post_init__(self) -> None:  # nested values as JSON has them: a result equals itself read back
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                object.__setattr__(self, f.name, plain(value))
            elif f.name in ("calls", "by_position"):
                object.__setattr__(self, f.name, tuple(plain(row) for row in value))

    def to_json(self) -> JsonObject:
        keys = self.keys or (*self._order(), *self.extra)
        return {key: plain(self.figure(key)) for key in keys}

    def figure(self, key: str) -> Any:
        if key == "configs" and self.configs_by_name:
            return {c.config: c.to_json() for c in self.configs}
        return getattr(self, key) if key in _names(type(self)) else self.extra[key]

    def extraction_settings(self) -> ExtractionSettings | None:
        """The prompt the run measured (its entity types, layout, worked examples), when it says."""
        if not self.settings:
            return None
        return ExtractionSettings(**{**self.settings, "entity_types": tuple(self.settings["entity_types"])})

    def rows(self) -> list[JsonObject]:
        """The configurations as table rows (their JSON objects), for polars."""
        return [c.to_json() for c in self.configs]

    def config(self, name: str) -> ConfigFigures | None:
        """The configuration named ``name`` (None when it did not run)."""
        return next((c for c in self.configs if c.config == name), None)


@dataclass(frozen=True)
class EvalResult(_Result):
    """``evaluate``: each configuration's quality against gold and its speed, one document per call first
    (the reference of speedups, agreement and the paired intervals)."""

    ORDER: ClassVar[tuple[str, ...]] = (
        "kind", "gold", "lm", "model_id", "layout", "capabilities", "emulated", "documents", "types_scored",
        "gold_map", "prompt_cache", "settings", "machine", "configs", "by_position", "reference_cached",
        "reference_cache", "reference_created", "bootstrap", "calls")
    kind: str = "eval"
    gold: str | None = None
    layout: str | None = None
    emulated: bool = False
    documents: int = 0
    types_scored: tuple[str, ...] = ()
    gold_map: Mapping[str, str] = field(default_factory=dict)
    prompt_cache: bool = False
    by_position: tuple[JsonObject, ...] = ()
    reference_cached: bool = False
    reference_cache: str | None = None
    reference_created: float | None = None  # the cached reference's time (seconds since the epoch)
    bootstrap: Mapping[str, Any] | None = None

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"types_scored": tuple(data.get("types_scored") or ()),
                "by_position": tuple(data.get("by_position") or ())}

    @property
    def reference(self) -> ConfigFigures | None:
        """One document per call: the first configuration."""
        return self.configs[0] if self.configs else None


@dataclass(frozen=True)
class BenchResult(_Result):
    """``bench``: the configurations of ``BENCH_PLAN`` side by side (``speedups``: the keys
    ``speedup_X_vs_Y``) and, for a rate-limited backend, the share of the limits' bound C and D reached
    (the ``rate_limit_bound_docs_per_min``, ``c_docs_per_min``, ``bound_share`` of C and their ``d_`` twins,
    present when that configuration had a bound)."""

    ORDER: ClassVar[tuple[str, ...]] = (
        "kind", "lm", "model_id", "emulated", "corpus", "documents", "max_docs", "budget", "concurrency",
        "interleaved_chunk", "layout", "api_base", "rpm", "tpm", "settle_seconds", "prompt_cache_available",
        "capabilities", "settings", "priced_as", "prices", "machine", "configs", "calls")
    kind: str = "bench"
    emulated: bool = False
    corpus: str | None = None
    documents: int = 0
    max_docs: int = 0
    budget: int = 0
    concurrency: str = ""
    interleaved_chunk: int | None = None
    layout: str | None = None
    api_base: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    settle_seconds: float | None = None
    prompt_cache_available: bool = False
    priced_as: str | None = None
    prices: Mapping[str, Any] | None = None
    speedups: Mapping[str, float | None] = field(default_factory=dict)
    lost: int = 0
    rate_limit_bound_docs_per_min: float | None = None
    c_docs_per_min: float | None = None
    bound_share: float | None = None
    d_rate_limit_bound_docs_per_min: float | None = None
    d_docs_per_min: float | None = None
    d_bound_share: float | None = None
    profile: Mapping[str, Any] | None = None  # an emulated backend's

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"speedups": {k: v for k, v in data.items() if cls._grouped(k)}}

    @classmethod
    def _grouped(cls, key: str) -> bool:
        return key.startswith("speedup_")

    def _order(self) -> tuple[str, ...]:
        bounds = [(p, ("rate_limit_bound_docs_per_min", "docs_per_min", "bound_share")) for p in ("", "d_")]
        present = [f"{prefix or ('c_' if k == 'docs_per_min' else '')}{k}" for prefix, group in bounds
                   if getattr(self, f"{prefix}rate_limit_bound_docs_per_min") is not None for k in group]
        return (*self.ORDER, *self.speedups, "lost", *present, *(("profile",) if self.profile is not None else ()))

    def figure(self, key: str) -> Any:
        return self.speedups[key] if key in self.speedups else super().figure(key)


def read_result(data_or_path: Mapping[str, Any] | str | Path) -> EvalResult | BenchResult:
    """An eval or bench result, by its ``kind``."""
    data = read_json(data_or_path)
    kind = data.get("kind")
    if kind not in ("eval", "bench"):
        raise ValueError(f"not an eval or bench result (kind {kind!r})")
    return (EvalResult if kind == "eval" else BenchResult).from_json(data)

