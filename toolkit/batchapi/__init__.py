"""Provider batch APIs as an execution mode (``extract --mode batch-api``): packed batches as JSONL
requests, uploaded and polled through LiteLLM's files and batches API, settled by the synchronous
path's reply code, with what a batch did not answer sent through the synchronous executor.

Modules: :mod:`~toolkit.batchapi.requests` (request lines, file splitting),
:mod:`~toolkit.batchapi.providers` (the provider interface; LiteLLM's client),
:mod:`~toolkit.batchapi.replies` (output lines settled), :mod:`~toolkit.batchapi.engine` (the mode,
and :func:`run_batch_api` for the bench), :mod:`~toolkit.batchapi.emulated` (an emulated batch
provider) and :mod:`~toolkit.batchapi.server` (a local HTTP server of the OpenAI endpoints).
"""

from toolkit.batchapi.engine import BatchApiEngine, BatchApiSettings, batch_provider, run_batch_api
from toolkit.batchapi.providers import BatchInfo, BatchProvider, LiteLLMBatches
from toolkit.batchapi.replies import BATCH_API_KEYS, BATCH_PREFIX, batch_api_counts, batch_api_fields, is_batch_priced
from toolkit.batchapi.requests import BatchLimits, build_requests, split_files

__all__ = ["BATCH_API_KEYS", "BATCH_PREFIX", "BatchApiEngine", "BatchApiSettings", "BatchInfo", "BatchLimits", "BatchProvider",
           "LiteLLMBatches", "batch_api_counts", "batch_api_fields", "batch_provider", "build_requests", "is_batch_priced", "run_batch_api", "split_files"]
