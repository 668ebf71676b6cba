"""Anthropic's Messages API on the wire, as DSPy's (lm15) client speaks it: ``system`` and content
blocks in, ``max_tokens`` required, the schema in ``output_config.format``; a ``message`` out with
``usage`` (``input_tokens`` not read from or written to the cache, ``cache_read_input_tokens``,
``cache_creation_input_tokens``); ``anthropic-ratelimit-*`` headers (reset as an RFC 3339 time)
and, on a 429, ``retry-after`` in seconds with Anthropic's error body."""

from __future__ import annotations

import uuid
from typing import Any

from toolkit.lm import Answer, Prompt
from toolkit.testing.serve._window import Limit
from toolkit.testing.serve._wire import ORGANIZATION, Call, Throttle, retry_after, rfc3339, text_of, tightest

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
          500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_TOKENS = ("tokens", "input-tokens", "output-tokens")
_WHAT = {"requests": "requests", "tokens": "tokens", "input-tokens": "input tokens", "output-tokens": "output tokens"}


class AnthropicWire:
    """``POST /v1/messages``."""

    route = "messages"
    id_header = "request-id"

    def read(self, body: dict[str, Any], default_max_tokens: int) -> Call:
        if "max_tokens" not in body:
            raise ValueError("max_tokens: Field required")
        system = text_of(body.get("system"))
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": str(m.get("role", "user")), "content": text_of(m.get("content"))} for m in body["messages"]]
        fmt = (body.get("output_config") or {}).get("format") or {}
        return Call(str(body.get("model") or "emulated"), messages, int(body["max_tokens"]), fmt.get("schema"))

    def reply(self, call: Call, prompt: Prompt, answer: Answer) -> dict[str, Any]:
        written = max(0, max((n for n, _ in prompt.prefixes), default=0) - prompt.cached)
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": call.model,
                "content": [{"type": "text", "text": answer.text}],
                "stop_reason": "max_tokens" if answer.finish == "length" else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt.tokens - prompt.cached - written,
                          "cache_creation_input_tokens": written, "cache_read_input_tokens": prompt.cached,
                          "output_tokens": answer.output_tokens}}

    def headers(self, state: dict[str, Limit], wall: float) -> dict[str, str]:
        """Each family where a limit applies; ``input-tokens`` (``output-tokens``) is the tighter of
        the input (output) limit and the limit on all tokens, ``tokens`` the tightest of them."""
        out: dict[str, str] = {}
        for name, limit in (("requests", state.get("requests")), ("tokens", tightest(state, _TOKENS)),
                            ("input-tokens", tightest(state, ("tokens", "input-tokens"))),
                            ("output-tokens", tightest(state, ("tokens", "output-tokens")))):
            if limit is not None:
                out |= {f"anthropic-ratelimit-{name}-limit": str(limit.limit),
                        f"anthropic-ratelimit-{name}-remaining": str(limit.remaining),
                        f"anthropic-ratelimit-{name}-reset": rfc3339(wall + limit.reset)}
        return out

    def error(self, status: int, message: str, code: str | None = None) -> dict[str, Any]:
        return {"type": "error", "error": {"type": _TYPES.get(status, "invalid_request_error"), "message": message}}

    def throttled(self, model: str, throttle: Throttle) -> tuple[dict[str, Any], dict[str, str]]:
        verdict = throttle.verdict
        if verdict is None or verdict.refused is None:
            message = (f"This request would exceed the rate limit for your organization ({ORGANIZATION}) "
                       "(an injected fault).")
        else:
            refused = verdict.refused
            message = (f"This request would exceed the rate limit for your organization ({ORGANIZATION}) of "
                       f"{refused.limit} {_WHAT[refused.name]} per minute. For details, refer to: "
                       "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current "
                       "usage.")
        headers = retry_after(throttle.wait) if throttle.wait is not None else {}
        return self.error(429, message), headers
