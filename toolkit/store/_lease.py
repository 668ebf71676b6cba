"""Keeping a run's lease while it goes on: a thread renews it; a lost lease stops the run's writes."""

from __future__ import annotations

import threading
from typing import Protocol

from toolkit.store._runs import LEASE_SECONDS, LeaseLost


class Leased(Protocol):
    """A store that holds runs' leases."""

    def renew_lease(self, run_id: str) -> None: ...


class LeaseKeeper:
    """Renews ``run_id``'s lease in ``db`` every ``interval`` seconds (in a thread) while entered;
    :meth:`check` raises :class:`~toolkit.store._sql.LeaseLost` once another process has taken it."""

    def __init__(self, db: Leased, run_id: str, interval: float = LEASE_SECONDS / 4) -> None:
        self.db, self.run_id, self.interval = db, run_id, interval
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.db.renew_lease(self.run_id)
            except LeaseLost as exc:
                self.lost = exc
                return
            except Exception:  # noqa: BLE001 - a busy store: try again at the next beat
                continue

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost
