"""Scale-out on Ray: the same job's chunks extracted by a pool of Ray workers, under one global
rate limit, with every outcome and every paid call written once by the driver.

* **Workers** (:mod:`toolkit.jobs.scaleout._worker`, Ray actors) each hold an
  :class:`~toolkit.jobs._service.ExtractionService` built from the run's LM, extraction settings and
  policy: the same packer, executor, DSPy module and validation as the local runner. A worker
  streams what a chunk does to the driver call by call: each call's record with the outcomes it
  decided, as soon as it ends.
* **One global pace** (:mod:`toolkit.jobs.scaleout._pacing`, a named async actor, started with the workers by
  :mod:`toolkit.jobs.scaleout._pool`): the requests- and
  tokens-per-minute windows, the adaptive concurrency limit and a ``Retry-After`` pause that every
  worker honours; each call asks it for a slot and for room in the window, so N workers together
  never exceed the provider's limits (Ray Data's own HTTP stage limits ``qps`` per worker only and
  ignores ``Retry-After``). Slots are owned by a worker and come back when it dies; no wait is
  endless.
* **The driver** (:class:`RayRunner`) reads the corpus (streamed, through the same intake as a
  local run), submits chunks to the pool (a few per worker in flight), records each call as it
  arrives and writes each outcome to the store: one writer, SQLite and IRIS alike. A worker that
  dies (killed, out of memory) is replaced and what is left of its chunk (the documents not yet
  decided) goes to the pool again, so a document is written once and a successful call is not
  paid again; a chunk whose workers die three times in a row with nothing of it decided fails with
  the reason, and when no worker can start the run stops with one line. A stop (the run's event)
  sends no chunk and starts no call; calls in flight finish and are recorded before the workers
  are killed.
* **Chaos** (:func:`kill_workers_every`): a run's workers killed every few seconds while it runs.
"""

from toolkit.jobs.scaleout._chaos import kill_workers_every, ray_chaos, worker_names
from toolkit.jobs.scaleout._console import ray_output_to_stderr
from toolkit.jobs.scaleout._pacing import GateStuck
from toolkit.jobs.scaleout._pool import RayService
from toolkit.jobs.scaleout._runner import INSTALL, RayRunner, require_ray

__all__ = [
    "GateStuck", "INSTALL", "RayRunner", "RayService", "kill_workers_every", "ray_chaos", "ray_output_to_stderr",
    "require_ray", "worker_names",
]
