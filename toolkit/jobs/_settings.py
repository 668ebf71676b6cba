"""Everything that shapes a run of the main job, in one value: :class:`RunSettings`.

What is extracted and how it is packed, how fast calls may go, how they are made (``mode``), where
a synchronous run's chunks are extracted (``runner``: this process or Ray workers) and where the
LM and the batch API are reached. The command line's defaults are read from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.core import MODES, RUNNERS, STRATEGIES, Mode, RunnerName, Strategy
from toolkit.jobs.batchapi import BatchApiSettings

if TYPE_CHECKING:
    from toolkit.extraction import ExtractionSettings

DEFAULT_CORPUS = "pubmed-sample"  # what a run extracts when it is not told
_UNRECORDED = {"recorded": False}  # how the run is carried out, not what it extracts: not in the store's record


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a run; what it extracts and how (all but the fields marked
    unrecorded: where it runs, and URLs that may hold a password) is recorded in the store with it."""

    token_budget: int = 8192
    max_docs: int = 10
    strategy: Strategy = "fifo"
    concurrency: str | None = None  # default: 1 on the local model, auto:16 elsewhere
    extraction: ExtractionSettings = field(default_factory=lambda: _extraction_settings())
    chunk_docs: int = 1000  # documents read, packed and run at a time
    strict: bool = False  # bad input stops the run instead of becoming failed documents
    price: str | None = None  # price tokens as this model (LiteLLM's price map) or price file; default: the LM's own
    mode: Mode = "sync"  # sync: calls as they go; batch-api: the provider's batch API (toolkit.jobs.batchapi)
    rpm: int | None = None  # the account's requests per minute (default: the backend's, or learned from replies)
    tpm: int | None = None  # the account's tokens per minute (prompt plus max_tokens, as providers count them)
    runner: RunnerName = field(default="local", metadata=_UNRECORDED)  # local: this process; ray: Ray workers
    workers: int = field(default=2, metadata=_UNRECORDED)  # Ray workers (runner "ray")
    ray_address: str | None = field(default=None, metadata=_UNRECORDED)  # an existing Ray cluster; default: start one
    api_base: str | None = field(default=None, metadata=_UNRECORDED)  # an OpenAI-compatible server's base URL
    batch_api: BatchApiSettings | None = field(default=None, metadata=_UNRECORDED)  # mode batch-api: polls, limits

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.chunk_docs < 1:
            raise ValueError("chunk_docs must be >= 1")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.runner not in RUNNERS:
            raise ValueError(f"unknown runner {self.runner!r}: local or ray")
        if self.mode == "batch-api" and self.runner != "local":
            raise ValueError("--mode batch-api runs on the local runner: the provider does the work")
        if self.mode == "batch-api" and self.extraction.passes > 1:
            raise ValueError("--mode batch-api sends one pass per batch: run --passes N with --mode sync")
        for name in ("rpm", "tpm", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")

    @classmethod
    def default(cls, name: str) -> Any:
        """Field ``name``'s default, read without making settings (which would import DSPy): the
        command line's defaults are these."""
        default = cls.__dataclass_fields__[name].default
        if default is dataclasses.MISSING:
            raise ValueError(f"RunSettings.{name} has no plain default")
        return default

    def to_dict(self) -> dict[str, Any]:
        """The recorded settings, JSON-ready (what the store keeps with the run)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("recorded", True)}


def _extraction_settings() -> ExtractionSettings:
    from toolkit.extraction import ExtractionSettings  # imports DSPy: not before a run needs it

    return ExtractionSettings()


def _plain(value: object) -> object:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
