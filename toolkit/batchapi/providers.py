"""Where batches go: a provider's files and batches API behind one small interface.

:class:`LiteLLMBatches` reaches an OpenAI-compatible batch API (OpenAI itself, or ``--api-base``:
another server, such as :mod:`toolkit.batchapi.server`) through LiteLLM's ``create_file``,
``create_batch``, ``retrieve_batch`` and ``file_content``. The in-process emulated provider
(:class:`toolkit.batchapi.emulated.EmulatedBatches`) has the same interface on a virtual clock.
LiteLLM is imported on first use (it is slow to import).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.batchapi.requests import ENDPOINT

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchInfo:
    """A batch as the provider reports it: status, output and error files, request counts."""

    id: str
    status: str  # validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str | None = None  # why the batch failed, if it did

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_openai(cls, batch: Any) -> BatchInfo:
        """From an OpenAI ``Batch`` object (or its dict)."""
        data = batch if isinstance(batch, dict) else batch.model_dump()
        counts = data.get("request_counts") or {}
        errors = data.get("errors") or {}
        messages = [e.get("message") or e.get("code") for e in errors.get("data") or []] if isinstance(errors, dict) else []
        return cls(data["id"], data["status"], data.get("output_file_id"), data.get("error_file_id"),
                   counts.get("total") or 0, counts.get("completed") or 0, counts.get("failed") or 0,
                   "; ".join(str(m) for m in messages if m) or None)


class BatchProvider(Protocol):
    """A files and batches API (upload, create, retrieve, download) and the clock polls wait on."""

    def upload(self, name: str, data: bytes) -> str: ...
    def create(self, input_file_id: str, metadata: dict[str, str]) -> str: ...
    def retrieve(self, batch_id: str) -> BatchInfo: ...
    def content(self, file_id: str) -> bytes: ...
    def sleep(self, seconds: float) -> None: ...
    def now(self) -> float: ...


class LiteLLMBatches:
    """An OpenAI-compatible batch API through LiteLLM. ``api_base``: the server (None: OpenAI);
    ``api_key``: default ``OPENAI_API_KEY`` (a placeholder for a local server when unset)."""

    def __init__(self, api_base: str | None = None, api_key: str | None = None, provider: str = "openai",
                 timeout: float = 600.0) -> None:
        self.api_base = api_base
        self.api_key = api_key
        self.provider = provider
        self.timeout = timeout

    def _options(self) -> dict[str, Any]:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key is None and self.api_base:
            from toolkit.lm.provider import PLACEHOLDER_KEY

            key = PLACEHOLDER_KEY
        options: dict[str, Any] = {"custom_llm_provider": self.provider, "timeout": self.timeout}
        if self.api_base:
            options["api_base"] = self.api_base
        if key is not None:
            options["api_key"] = key
        return options

    @staticmethod
    def _litellm() -> Any:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        return litellm

    def upload(self, name: str, data: bytes) -> str:
        made = self._litellm().create_file(file=(name, data, "application/jsonl"), purpose="batch", **self._options())
        return made.id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> str:
        batch = self._litellm().create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=input_file_id,
                                             metadata=metadata, **self._options())
        return batch.id

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.from_openai(self._litellm().retrieve_batch(batch_id=batch_id, **self._options()))

    def content(self, file_id: str) -> bytes:
        return self._litellm().file_content(file_id=file_id, **self._options()).content

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> float:
        return time.monotonic()
