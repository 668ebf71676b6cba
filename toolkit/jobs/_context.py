"""One run of the main job as it executes: every piece it was given, in one frozen value."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.core import Prices
    from toolkit.jobs._intake import Intake
    from toolkit.jobs._runners import Runner
    from toolkit.jobs._service import ExtractionService
    from toolkit.jobs._settings import RunSettings
    from toolkit.packing import PackingSettings
    from toolkit.store import LeaseKeeper, Store

Progress = bool | Callable[[dict[str, Any]], None] | None  # None/True: a bar; False: nothing; a callable: the tally


@dataclass(frozen=True)
class RunContext:
    """Run ``run_id`` in ``db``: records through ``gate`` (the intake), chunks packed by ``packing``
    through ``runner`` (its calls made by ``service``), its lease kept by ``heartbeat``, its tokens
    priced at ``prices``; ``total``: the documents expected (for the bar), ``stop``: its Stop event."""

    run_id: str
    db: Store
    service: ExtractionService
    runner: Runner
    packing: PackingSettings
    settings: RunSettings
    gate: Intake
    heartbeat: LeaseKeeper
    stop: threading.Event
    prices: Prices | None
    progress: Progress
    total: int | None
