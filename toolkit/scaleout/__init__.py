"""Scale-out on Ray: the same job's chunks extracted by a pool of Ray workers, under one global
rate limit, with every outcome and every paid call written once by the driver.

* **Workers** (:mod:`toolkit.scaleout.worker`, Ray actors) each hold an
  :class:`~toolkit.service.ExtractionService` built from the run's LM, extraction settings and
  policy: the same packer, executor, DSPy module and validation as the local engine. A worker
  streams what a chunk does to the driver call by call: each call's record with the outcomes it
  decided, as soon as it ends.
* **One global pace** (:mod:`toolkit.scaleout.pacing`, a named async actor): the requests- and
  tokens-per-minute windows, the adaptive concurrency limit and a ``Retry-After`` pause that every
  worker honours; each call asks it for a slot and for room in the window, so N workers together
  never exceed the provider's limits (Ray Data's own HTTP stage limits ``qps`` per worker only and
  ignores ``Retry-After``). Slots are owned by a worker and come back when it dies; no wait is
  endless.
* **The driver** (:class:`RayEngine`) reads the corpus (streamed, through the same intake as a
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

from toolkit.scaleout.chaos import kill_workers_every, worker_names
from toolkit.scaleout.engine import INSTALL, RayEngine, require_ray
from toolkit.scaleout.pacing import GateStuck

__all__ = ["INSTALL", "GateStuck", "RayEngine", "kill_workers_every", "require_ray", "worker_names"]
