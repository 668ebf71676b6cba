"""Provider batch APIs as an execution mode (``extract --mode batch-api``): packed batches as JSONL
requests, uploaded and polled through LiteLLM's files and batches API (or Anthropic's Message
Batches), settled by the synchronous path's reply code, with what a batch did not answer sent
through the synchronous executor; resumable across Stop, kills and provider faults.

Modules: :mod:`~toolkit.jobs.batchapi._requests` (request lines, file splitting),
:mod:`~toolkit.jobs.batchapi._providers` (the provider interface; LiteLLM's client),
:mod:`~toolkit.jobs.batchapi._anthropic` (Anthropic's Message Batches behind that interface),
:mod:`~toolkit.jobs.batchapi._replies` (output lines settled), :mod:`~toolkit.jobs.batchapi._jobs` (a run's jobs
and their record in the store), :mod:`~toolkit.jobs.batchapi._runner` (the mode, sending in
:mod:`~toolkit.jobs.batchapi._sending` and polling in :mod:`~toolkit.jobs.batchapi._polling`; and
:func:`run_batch_api` for the bench), :mod:`~toolkit.jobs.batchapi._emulated` (an emulated batch provider,
both formats), :mod:`~toolkit.jobs.batchapi.server` (a local HTTP server of the OpenAI endpoints) and
:mod:`~toolkit.jobs.batchapi._chaos` (the mode killed and resumed: ``chaos --mode batch-api``).
"""

from toolkit.jobs.batchapi._anthropic import AnthropicBatches
from toolkit.jobs.batchapi._chaos import run_batch_chaos
from toolkit.jobs.batchapi._emulated import EmulatedMessageBatches
from toolkit.jobs.batchapi._providers import BatchInfo, BatchProvider, LiteLLMBatches, NotAtProvider
from toolkit.jobs.batchapi._replies import (
    BATCH_API_KEYS,
    BATCH_PREFIX,
    batch_api_counts,
    batch_api_fields,
    is_batch_priced,
)
from toolkit.jobs.batchapi._requests import BatchLimits, build_requests, split_files
from toolkit.jobs.batchapi._runner import BatchApiRunner, batch_provider, run_batch_api
from toolkit.jobs.batchapi._sending import BatchApiSettings, BatchService

__all__ = [
    "AnthropicBatches", "BATCH_API_KEYS", "BATCH_PREFIX", "BatchApiRunner", "BatchApiSettings", "BatchInfo",
    "BatchLimits", "BatchProvider", "BatchService", "EmulatedMessageBatches", "LiteLLMBatches", "NotAtProvider",
    "batch_api_counts", "batch_api_fields", "batch_provider", "build_requests", "is_batch_priced", "run_batch_api",
    "run_batch_chaos", "split_files",
]
