"""Runs and who owns them: a run is owned by one process at a time through a lease in the store.

:meth:`RunLedger.start_run` takes the lease (refused with :class:`RunBusy` while another live
process holds it; taken over at once when the owner's process on this host has exited, after the
lease expires otherwise); the owner renews it while it runs; a process that lost it writes nothing
more (:class:`LeaseLost`); :meth:`RunLedger.finish_run` releases it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from toolkit.core import redact
from toolkit.store._db import Database, LeaseLost, RunBusy, StoreError, now

LEASE_SECONDS = 60.0  # a run's owner renews its lease well within this; a crashed owner's run frees after it
def new_owner() -> str:
    """An owner token: host, process id and a random part (two runs of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(owner: str) -> bool:
    """False when ``owner`` is a process of this host that has exited (its lease can be taken at once)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLedger(Database):
    """The runs table and the leases on its rows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owners: dict[str, str] = {}  # run id -> this store's owner token, while it holds the run
        super().__init__(*args, **kwargs)

    def start_run(self, run_id: str, lm: str, model_id: str, settings: dict[str, Any],
                  lease: float = LEASE_SECONDS) -> bool:
        """Create ``run_id`` or take it over, owned by this store until :meth:`finish_run`. True if
        it already existed. Raises :class:`RunBusy` while another live process owns it."""
        owner = new_owner()
        values = (lm, model_id, json.dumps(settings), owner, time.time() + lease)
        existing = self.get_run(run_id)
        if existing is None:
            try:
                self._transaction(lambda: self._execute(
                    f"INSERT INTO {self._t('batchx_runs')} (run_id, lm, model_id, settings, owner, lease_until, "
                    "started, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *values, now(), "running")),
                    "starting the run")
                self._owners[run_id] = owner
                return False
            except StoreError:
                existing = self.get_run(run_id)  # another process created it meanwhile
                if existing is None:
                    raise
        if self._held(existing) and existing["owner"] != self._owners.get(run_id):
            raise RunBusy(f"run {run_id!r} is in use by another process ({existing['owner']}, lease until "
                          f"{datetime.fromtimestamp(existing['lease_until'], UTC):%H:%M:%S} UTC): wait for it "
                          "to finish, or use another --run name")
        swapped = self._transaction(lambda: self._execute(  # compare-and-set: nobody took it since we read it
            f"UPDATE {self._t('batchx_runs')} SET lm = ?, model_id = ?, settings = ?, owner = ?, lease_until = ?, "
            "status = ? WHERE run_id = ? AND (owner IS NULL OR owner = ?)",
            (*values, "running", run_id, existing["owner"] or "")).rowcount, "starting the run")
        if swapped != 1:
            raise RunBusy(f"run {run_id!r} was taken by another process while starting; try again")
        self._owners[run_id] = owner
        return True

    def _held(self, row: dict[str, Any]) -> bool:
        """Whether another process holds the run of ``row`` now."""
        if row["status"] != "running" or not row["owner"]:
            return False
        return (row["lease_until"] or 0) > time.time() and _owner_alive(row["owner"])

    def renew_lease(self, run_id: str, lease: float = LEASE_SECONDS) -> None:
        """Extend this store's lease on ``run_id``; :class:`LeaseLost` if another process took it."""
        owner = self._owners.get(run_id)
        if owner is None:
            raise LeaseLost(f"run {run_id!r} is not owned by this process")
        changed = self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_runs')} SET lease_until = ? WHERE run_id = ? AND owner = ?",
            (time.time() + lease, run_id, owner)).rowcount, "renewing the run's lease")
        if changed != 1:
            self._owners.pop(run_id, None)
            raise LeaseLost(f"run {run_id!r} was taken over by another process; this one stops writing to it")

    def _check_owner(self, run_id: str) -> None:
        if run_id not in self._owners:
            return
        row = self._execute(f"SELECT owner FROM {self._t('batchx_runs')} WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or row[0] != self._owners[run_id]:
            self._owners.pop(run_id, None)
            raise LeaseLost(f"run {run_id!r} was taken over by another process; this one stops writing to it")

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Record the run's end and release it."""
        text = redact(json.dumps(summary, default=str))
        self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_runs')} SET finished = ?, status = ?, summary = ?, owner = NULL, "
            "lease_until = NULL WHERE run_id = ?", (now(), status, text, run_id)), "finishing the run", run_id)
        self._owners.pop(run_id, None)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT * FROM {self._t('batchx_runs')} WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def runs(self) -> list[dict[str, Any]]:
        """Every run; ``status`` ``running`` only while its owner holds it (else ``abandoned``: the
        process ended without finishing it; resume it by name)."""
        rows = self._query(f"SELECT run_id, lm, model_id, started, finished, status, owner, lease_until "
                           f"FROM {self._t('batchx_runs')}")
        for row in rows:
            if row["status"] == "running" and not self._held(row) and row["run_id"] not in self._owners:
                row["status"] = "abandoned"
        return rows

