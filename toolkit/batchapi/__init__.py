"""Provider batch APIs as an execution mode (``extract --mode batch-api``): packed batches as JSONL
requests, uploaded and polled through LiteLLM's files and batches API (or Anthropic's Message
Batches), settled by the synchronous path's reply code, with what a batch did not answer sent
through the synchronous executor; resumable across Stop, kills and provider faults.

Modules: :mod:`~toolkit.batchapi.requests` (request lines, file splitting),
:mod:`~toolkit.batchapi.providers` (the provider interface; LiteLLM's client),
:mod:`~toolkit.batchapi.anthropic` (Anthropic's Message Batches behind that interface),
:mod:`~toolkit.batchapi.replies` (output lines settled), :mod:`~toolkit.batchapi.jobs` (a run's jobs
and their record in the store), :mod:`~toolkit.batchapi.engine` (the mode, and
:func:`run_batch_api` for the bench), :mod:`~toolkit.batchapi.emulated` (an emulated batch provider,
both formats), :mod:`~toolkit.batchapi.server` (a local HTTP server of the OpenAI endpoints) and
:mod:`~toolkit.batchapi.chaos` (the mode killed and resumed: ``chaos --mode batch-api``).
"""

from toolkit.batchapi.anthropic import AnthropicBatches
from toolkit.batchapi.engine import BatchApiEngine, BatchApiSettings, batch_provider, run_batch_api
from toolkit.batchapi.providers import BatchInfo, BatchProvider, LiteLLMBatches, NotAtProvider
from toolkit.batchapi.replies import BATCH_API_KEYS, BATCH_PREFIX, batch_api_counts, batch_api_fields, is_batch_priced
from toolkit.batchapi.requests import BatchLimits, build_requests, split_files

__all__ = ["BATCH_API_KEYS", "BATCH_PREFIX", "AnthropicBatches", "BatchApiEngine", "BatchApiSettings", "BatchInfo",
           "BatchLimits", "BatchProvider", "LiteLLMBatches", "NotAtProvider", "batch_api_counts", "batch_api_fields",
           "batch_provider", "build_requests", "is_batch_priced", "run_batch_api", "split_files"]
