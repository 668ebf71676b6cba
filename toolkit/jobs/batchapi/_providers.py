"""Where batches go: a provider's files and batches API behind one small interface.

:class:`LiteLLMBatches` reaches an OpenAI-compatible batch API (OpenAI itself, or ``--api-base``:
another server, such as :mod:`toolkit.jobs.batchapi.server`) through LiteLLM's ``create_file``,
``create_batch``, ``list_batches``, ``retrieve_batch`` and ``file_content``. The in-process emulated
provider (:class:`toolkit.jobs.batchapi._emulated.EmulatedBatches`) has the same interface on a virtual
clock. LiteLLM is imported on first use (it is slow to import). A batch or file the provider does not
know (a 404; an emulated provider restarted without its state) raises :class:`NotAtProvider`;
``find`` looks a batch up by its metadata (how a batch created just before a crash is adopted).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.jobs.batchapi._requests import ENDPOINT

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
LIST_PAGES = 20  # pages of 100 batches searched for one (newest first)


class NotAtProvider(KeyError):
    """The provider does not know this batch or file (404, or an emulated provider that forgot it)."""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def json_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object (a dict), else an empty one."""
    return value if isinstance(value, dict) else {}


def as_dict(batch: Any) -> dict[str, Any]:
    """A batch object (an OpenAI ``Batch``, LiteLLM's, or a dict) as a dict."""
    return batch if isinstance(batch, dict) else batch.model_dump()


def find_batch(pages: Iterable[list[Any]], metadata: Mapping[str, str]) -> str | None:
    """The id of the first batch in ``pages`` (newest first) whose metadata holds every pair of
    ``metadata``, or None."""
    for page in pages:
        for batch in page:
            data = as_dict(batch)
            found = json_object(data.get("metadata"))
            if all(found.get(k) == v for k, v in metadata.items()):
                return str(data["id"])
    return None


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
        """From an OpenAI ``Batch`` object (or its dict); a reply without an id and a status is refused."""
        data = as_dict(batch)
        if not isinstance(data.get("id"), str) or not isinstance(data.get("status"), str):
            raise ValueError(f"not a batch: {str(data)[:200]}")
        counts = json_object(data.get("request_counts"))
        errors = data.get("errors") or {}
        found = errors.get("data") if isinstance(errors, dict) else None
        messages = [e.get("message") or e.get("code") for e in found if isinstance(e, dict)] \
            if isinstance(found, list) else []
        output, error = (f if isinstance(f, str) and f else None
                         for f in (data.get("output_file_id"), data.get("error_file_id")))
        return cls(data["id"], data["status"], output, error, _count(counts.get("total")),
                   _count(counts.get("completed")), _count(counts.get("failed")),
                   "; ".join(str(m) for m in messages if m) or None)


class BatchProvider(Protocol):
    """A files and batches API (upload, create, find by metadata, retrieve, download) and the clock
    polls wait on."""

    def upload(self, name: str, data: bytes) -> str: ...
    def create(self, input_file_id: str, metadata: dict[str, str]) -> str: ...
    def find(self, metadata: dict[str, str]) -> str | None: ...
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
            from toolkit.lm import PLACEHOLDER_KEY

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

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)`` with this provider's options; a 404 raises :class:`NotAtProvider`."""
        try:
            return fn(**kwargs, **self._options())
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                raise NotAtProvider(what) from exc
            raise

    def upload(self, name: str, data: bytes) -> str:
        made = self._litellm().create_file(file=(name, data, "application/jsonl"), purpose="batch", **self._options())
        return made.id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> str:
        batch = self._litellm().create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=input_file_id,
                                             metadata=metadata, **self._options())
        return batch.id

    def find(self, metadata: dict[str, str]) -> str | None:
        def pages() -> Iterator[list[Any]]:
            after = None
            for _ in range(LIST_PAGES):
                page = self._call("batches", self._litellm().list_batches, after=after, limit=100)
                data = list(page.data or [])
                yield data
                if not data or not getattr(page, "has_more", False):
                    return
                after = as_dict(data[-1])["id"]

        return find_batch(pages(), metadata)

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.from_openai(self._call(batch_id, self._litellm().retrieve_batch, batch_id=batch_id))

    def content(self, file_id: str) -> bytes:
        return self._call(file_id, self._litellm().file_content, file_id=file_id).content

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> float:
        return time.monotonic()
