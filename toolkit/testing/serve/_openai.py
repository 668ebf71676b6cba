"""OpenAI's chat completions on the wire: the request read, a ``chat.completion`` written with its
usage (``prompt_tokens_details.cached_tokens``), the ``x-ratelimit-*`` headers, and errors and
429s in OpenAI's words ("Rate limit reached for MODEL in organization ORG on tokens per min (TPM):
Limit L, Used U, Requested R. Please try again in 1.234s. ...")."""

from __future__ import annotations

import time
import uuid
from typing import Any

from toolkit.lm import Answer, Prompt, schema_of
from toolkit.testing.serve._window import Limit, duration
from toolkit.testing.serve._wire import ORGANIZATION, Call, Throttle, retry_after, retry_after_ms, text_of, tightest

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          500: "server_error", 503: "server_error", 504: "server_error"}
_PER_MIN = {"requests": ("requests", "RPM"), "tokens": ("tokens", "TPM"), "input-tokens": ("input tokens", "ITPM"),
            "output-tokens": ("output tokens", "OTPM")}
_VISIT = "Visit https://platform.openai.com/account/rate-limits to learn more."


class OpenAIWire:
    """``POST /v1/chat/completions``."""

    route = "chat"
    id_header = "x-request-id"

    def read(self, body: dict[str, Any], default_max_tokens: int) -> Call:
        messages = [{"role": str(m.get("role", "user")), "content": text_of(m.get("content"))}
                    for m in body["messages"]]
        if not messages:
            raise ValueError("messages: at least one message is required")
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
        return Call(str(body.get("model") or "emulated"), messages, int(cap), schema_of(body.get("response_format")))

    def reply(self, call: Call, prompt: Prompt, answer: Answer) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": call.model, "system_fingerprint": "fp_emulated",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text, "refusal": None},
                             "logprobs": None, "finish_reason": answer.finish}],
                "usage": {"prompt_tokens": prompt.tokens, "completion_tokens": answer.output_tokens,
                          "total_tokens": prompt.tokens + answer.output_tokens,
                          "prompt_tokens_details": {"cached_tokens": prompt.cached},
                          "completion_tokens_details": {"reasoning_tokens": 0}}}

    def headers(self, state: dict[str, Limit], wall: float) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, limit in (("requests", state.get("requests")),
                            ("tokens", tightest(state, ("tokens", "input-tokens", "output-tokens")))):
            if limit is not None:
                out |= {f"x-ratelimit-limit-{name}": str(limit.limit),
                        f"x-ratelimit-remaining-{name}": str(limit.remaining),
                        f"x-ratelimit-reset-{name}": duration(limit.reset)}
        return out

    def error(self, status: int, message: str, code: str | None = None) -> dict[str, Any]:
        param = "messages" if code == "context_length_exceeded" else None
        return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                          "code": code}}

    def throttled(self, model: str, throttle: Throttle) -> tuple[dict[str, Any], dict[str, str]]:
        verdict, wait = throttle.verdict, throttle.wait
        kind = "requests"
        if verdict is None or verdict.refused is None:
            message = f"Rate limit reached for {model} in organization {ORGANIZATION} (an injected fault)."
            message += f" Please try again in {duration(wait)}." if wait is not None else ""
        else:
            refused = verdict.refused
            kind = "requests" if refused.name == "requests" else "tokens"
            what, short = _PER_MIN[refused.name]
            where = f"for {model} in organization {ORGANIZATION} on {what} per min ({short}): Limit {refused.limit}"
            if wait is None:
                message = (f"Request too large {where}, Requested {verdict.requested}. The input or output tokens must "
                           f"be reduced in order to run successfully. {_VISIT}")
            else:
                message = (f"Rate limit reached {where}, Used {refused.used}, Requested {verdict.requested}. "
                           f"Please try again in {duration(wait)}. {_VISIT}")
        body = {"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}}
        headers: dict[str, str] = {}
        if wait is not None and throttle.retry_after:
            headers |= retry_after(wait)
        if wait is not None and throttle.retry_after_ms:
            headers |= retry_after_ms(wait)
        return body, headers
