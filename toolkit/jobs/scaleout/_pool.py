"""The actors of a run on Ray, as the driver holds them: :class:`WorkerPool` starts the global pace
and the workers, replaces a worker that died and kills them all at the end."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.core import redact
from toolkit.jobs.scaleout._pacing import GlobalPace
from toolkit.jobs.scaleout._worker import CONTROL, Worker

if TYPE_CHECKING:
    from toolkit.execution import ExecutionPolicy
    from toolkit.extraction import ExtractionSettings
    from toolkit.jobs._runners import RateLimits
    from toolkit.lm import ResolvedLM

try:
    import ray
except ImportError:  # pragma: no cover - the runner says how to install it (require_ray)
    ray = None  # type: ignore[assignment, unused-ignore]  # an optional extra: the module is None without it


class RayService(Protocol):
    """What a run on Ray takes from the driver's service (:class:`~toolkit.jobs.ExtractionService`):
    each worker builds its own from these."""

    resolved: ResolvedLM
    api_base: str | None
    settings: ExtractionSettings
    policy: ExecutionPolicy


def connect(service: RayService, workers: int, address: str | None) -> None:
    """Ray for a run of ``workers`` workers on ``service``'s LM: the cluster at ``address``, else the
    Ray already started in this process, else a local one."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if service.resolved.capabilities.virtual_time:
        raise ValueError(f"{service.resolved.spec} runs in virtual time, which processes cannot share: on Ray give "
                         "an emulated profile a speed, e.g. emulated:hosted-api@100 (real time, 100x faster)")
    if address is not None or not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)


def actor_prefix(run_id: str) -> str:
    """The start of the names of a run's actors: ``batchx-RUN-`` (then a time, ``-pacing`` or ``-worker-N``)."""
    return f"batchx-{run_id}-"


class WorkerPool:
    """Run ``run_id``'s actors: its global pace (the gate and window of ``service``'s policy) and
    its workers (``workers``: name -> actor), each building a service like ``service``; a worker
    whose gate gives no slot for ``patience`` seconds gives up waiting."""

    startup_seconds = 180.0

    def __init__(self, service: RayService, run_id: str, patience: float) -> None:
        prefix = f"{actor_prefix(run_id)}{time.time_ns()}"
        self.patience = patience
        self.pacing = ray.remote(GlobalPace).options(name=f"{prefix}-pacing", max_concurrency=1000).remote(
            service.policy, patience)
        self._spec = (service.resolved.spec, service.api_base, service.settings, service.policy, f"{prefix}-pacing")
        self._names = (f"{prefix}-worker-{n}" for n in itertools.count())
        # one chunk at a time; ray's stubs leave out the actor options of ray.remote (concurrency_groups)
        actor = ray.remote(num_cpus=0.5, concurrency_groups={CONTROL: 1})  # type: ignore[call-overload, unused-ignore]
        self._actor = actor(Worker)
        self.workers: dict[str, Any] = {}  # name -> actor

    def start(self) -> str:
        """One more worker; its name."""
        name = next(self._names)
        self.workers[name] = self._actor.options(name=name).remote(*self._spec, name, self.patience)
        return name

    def await_start(self) -> None:
        """Wait until every worker has started (a worker killed while it started is replaced); one
        clear line when they cannot."""
        deadline, waiting = time.monotonic() + self.startup_seconds, list(self.workers)
        while waiting:
            name = waiting.pop()
            try:
                ray.get(self.workers[name].pid.remote(), timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                raise ValueError(f"no Ray worker started in {self.startup_seconds:g} s: the cluster has no room for "
                                 f"{len(self.workers)} workers of 0.5 CPU each") from None
            except ray.exceptions.RayActorError as exc:
                if exc.actor_init_failed:
                    raise ValueError(f"no Ray worker can start: {ray_reason(exc)}") from None
                ray.kill(self.workers.pop(name), no_restart=True)
                waiting.append(self.start())

    def retire(self, owner: str, replace: bool) -> bool:
        """Worker ``owner`` died: its slots of the global gate come back; the first time (the first
        of its chunks back) it is killed and, if ``replace``, replaced. Whether it was replaced."""
        # ray's stubs type an actor handle's methods as the plain methods, without .remote
        self.pacing.release_owner.remote(owner)  # type: ignore[attr-defined, unused-ignore]
        if (worker := self.workers.pop(owner, None)) is None:
            return False
        ray.kill(worker, no_restart=True)
        if replace:
            self.start()
        return replace

    def kill(self) -> RateLimits | None:
        """Kill every actor; the limits the global pace ended with (None: none, or the pace is gone)."""
        limits = _final_limits(self.pacing)
        for actor in (*self.workers.values(), self.pacing):
            ray.kill(actor)
        self.workers = {}
        return limits


def ray_reason(exc: BaseException) -> str:
    """What Ray says of a death or failure, in one line: its last line (the exception, for a worker
    whose start failed), from its exit detail on, without Ray's list of common causes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = (lines[-1] if lines else type(exc).__name__).partition(" Some common causes include")[0]
    before, marked, detail = why.partition("Worker exit detail: ")
    return (redact(detail if marked else before) or "")[:300]


def _final_limits(pacing: Any) -> RateLimits | None:
    """The limits the global pace ended with (None: none, or the pace is gone)."""
    try:
        limits = ray.get(pacing.stats.remote(), timeout=10)["limits"]
    except ray.exceptions.RayError:
        return None
    return limits if limits["rpm"] or limits["tpm"] else None
