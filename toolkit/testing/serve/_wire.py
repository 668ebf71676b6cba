"""What the two wire formats share: a call as the emulator reads it, and how a provider writes
a wait in a ``retry-after`` header or an RFC 3339 time."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from toolkit.lm import Answer, Prompt
from toolkit.testing.serve._window import Limit, Verdict

ORGANIZATION = "org-emulated"


@dataclass(frozen=True)
class Call:
    """A request as the emulator reads it: OpenAI-style ``messages`` (text only), the output cap
    the client reserved, the JSON schema it asked for (None: any JSON)."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    schema: dict[str, Any] | None


@dataclass(frozen=True)
class Throttle:
    """A 429 to write: the window's ``verdict`` (None: an injected one), the seconds the server
    tells the client to wait (None: it does not say), and whether to say it in ``retry-after``."""

    verdict: Verdict | None
    wait: float | None
    retry_after: bool = False
    retry_after_ms: bool = False


class Wire(Protocol):
    """One provider's request and reply format (:mod:`~toolkit.testing.serve._openai`, ``_anthropic``)."""

    route: str
    id_header: str

    def read(self, body: dict[str, Any], default_max_tokens: int) -> Call: ...

    def reply(self, call: Call, prompt: Prompt, answer: Answer) -> dict[str, Any]: ...

    def headers(self, state: dict[str, Limit], wall: float) -> dict[str, str]: ...

    def error(self, status: int, message: str, code: str | None = None) -> dict[str, Any]: ...

    def throttled(self, model: str, throttle: Throttle) -> tuple[dict[str, Any], dict[str, str]]: ...


def text_of(content: Any) -> str:
    """A message's text: a string, or the text of its content parts."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def tightest(state: dict[str, Limit], names: tuple[str, ...]) -> Limit | None:
    """Of the limits ``names`` in ``state``, the one with the least remaining."""
    found = [state[n] for n in names if n in state]
    return min(found, key=lambda limit: limit.remaining) if found else None


def retry_after(seconds: float) -> dict[str, str]:
    """``retry-after`` in whole seconds (rounded up), or to the millisecond under a second (a
    fast profile's windows are shorter than a second)."""
    seconds = max(seconds, 0.001)
    value = str(math.ceil(seconds)) if seconds >= 1 else f"{math.ceil(seconds * 1000) / 1000:.3f}".rstrip("0")
    return {"retry-after": value}


def retry_after_ms(seconds: float) -> dict[str, str]:
    return {"retry-after-ms": str(math.ceil(seconds * 1000))}


def rfc3339(wall: float) -> str:
    """A wall-clock time as Anthropic writes it, to the millisecond: ``2025-01-01T12:00:01.250Z``."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"
