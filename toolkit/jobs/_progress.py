"""The main job's progress bar: documents, entities, retries and failures as they are decided."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class DocumentBar:
    """tqdm bar over documents with entities and retries in the postfix (ETA when the total is known)."""

    def __init__(self, progress: bool | Callable[[dict[str, Any]], None] | None, total: int | None,
                 retries: Callable[[], int]) -> None:
        self.callback = progress if callable(progress) else None
        self.retries = retries
        self.tally = {"documents": 0, "extracted": 0, "failed": 0, "entities": 0, "retries": 0}
        self.bar = None
        if progress is None or progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="doc", desc="extract", file=sys.stderr, dynamic_ncols=True)

    def update(self, outcome: Any) -> None:
        t = self.tally
        t["documents"] += 1
        t["extracted" if outcome.status == "extracted" else "failed"] += 1
        t["entities"] += len(outcome.entities)
        t["retries"] = self.retries()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(entities=t["entities"], retries=t["retries"], failed=t["failed"], refresh=False)
        if self.callback is not None:
            self.callback(dict(t))

    def skip(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
