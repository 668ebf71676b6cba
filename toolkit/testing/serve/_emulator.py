"""One chat call through the emulated provider, whatever its wire format: read, checked against
the context window, admitted or refused by the server's windows, faulted or answered by the
profile's engine (:class:`~toolkit.lm._emulated.EmulatedEngine`: the same gazetteer reply, prompt
cache and latencies as in process), every step in the log."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toolkit.lm import EmulatedEngine, PrefixCache, Profile, load_profile
from toolkit.testing.serve._faults import CONTENT_FAULTS, Fault, FaultPlan
from toolkit.testing.serve._stats import Entry, Stats
from toolkit.testing.serve._window import Limit, Limits, Window
from toolkit.testing.serve._wire import Throttle, Wire, request_id

DEFAULT_MAX_TOKENS = 16_384  # charged when a request sets no output cap: gpt-4o-mini's largest output


@dataclass(frozen=True)
class ServeSettings:
    """What the server emulates: ``profile`` (``NAME[@SPEED]``, a profile file, or a
    :class:`Profile`) answers; ``rpm``/``tpm`` (and ``itpm``/``otpm``: input and output tokens)
    per ``window`` seconds override the profile's limits (window default: a minute at its speed);
    ``retry_after``/``retry_after_ms`` add those headers to OpenAI 429s (OpenAI sends neither);
    ``faults``: rates by kind on top of the profile's (see :mod:`~toolkit.testing.serve._faults`);
    ``hold_seconds``: how long a ``timeout`` fault holds a call (default a minute at the speed);
    ``default_max_tokens``: the output charged when a request sets no cap; ``prompt_cache``
    False bypasses the profile's cache; ``keep_bodies``: each call's request body kept in the log
    (what a client really sent, for a test: it costs memory on a long run)."""

    profile: str | Profile = "hosted-api"
    rpm: int | None = None
    tpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None
    window: float | None = None
    retry_after: bool = False
    retry_after_ms: bool = False
    faults: dict[str, float] = field(default_factory=dict)
    hold_seconds: float | None = None
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    prompt_cache: bool = True
    seed: int = 0
    keep_bodies: bool = False

    def load(self) -> Profile:
        return self.profile if isinstance(self.profile, Profile) else load_profile(self.profile)

    def limits(self, profile: Profile) -> Limits:
        rpm = self.rpm if self.rpm is not None else profile.requests_per_minute
        tpm = self.tpm if self.tpm is not None else profile.tokens_per_minute
        return Limits(rpm, tpm, self.itpm, self.otpm, self.window or profile.window)

    def to_dict(self) -> dict[str, Any]:
        return asdict(replace(self, profile=self.load().name if isinstance(self.profile, Profile) else self.profile))


@dataclass(frozen=True)
class Reply:
    """What to answer: ``status``, a JSON ``body`` (or raw bytes), headers; ``drop``: close the
    connection without an answer."""

    status: int
    body: dict[str, Any] | bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class Emulator:
    """The server's state: the profile's engine, its windows, its faults, its log."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        profile = settings.load()
        self.engine = EmulatedEngine(profile, seed=settings.seed, cache=settings.prompt_cache)
        self.limits = settings.limits(profile)
        self.window = Window(self.limits)
        self.faults = FaultPlan({**profile.faults, **settings.faults}, settings.seed)
        self.stats = Stats()
        self.speed = profile.speed
        self._epoch: float | None = None  # wall clock minus loop clock

    def reset(self) -> None:
        """A fresh server: no log, empty windows and prompt cache, nothing queued."""
        self.stats.reset()
        self.window.clear()
        self.faults.clear()
        self.engine.cache = PrefixCache(self.engine.cache.ttl)

    async def call(self, wire: Wire, body: Any) -> Reply:
        now = asyncio.get_running_loop().time()
        if self._epoch is None:
            self._epoch = time.time() - now
        wall, rid = now + self._epoch, request_id()
        try:
            call = wire.read(body, self.settings.default_max_tokens)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return Reply(400, wire.error(400, f"invalid request: {exc}"), {wire.id_header: rid})
        prompt = self.engine.read(call.messages, now)
        entry = Entry(wall, wire.route, 0, False, self.engine.counted(prompt), call.max_tokens, prompt.tokens,
                      prompt.cached, request_id=rid, body=body if self.settings.keep_bodies else None)
        if self.engine.too_long(prompt, call.max_tokens):
            return self._log(entry, Reply(400, wire.error(400, self._too_long(prompt.tokens + call.max_tokens),
                                                           "context_length_exceeded")), wire, now)
        verdict = self.window.admit(entry.input, entry.output, now)
        if not verdict.admitted:
            body, headers = wire.throttled(call.model, Throttle(verdict, verdict.wait, *self._retry_headers()))
            return self._log(entry, Reply(429, body, headers), wire, now)
        entry = replace(entry, admitted=True)
        state = self.window.state(now)  # as the call was taken in (later calls not yet in the window)
        fault = self.faults.next()
        kind = fault.kind if fault else None
        if fault is not None and kind is not None and kind not in CONTENT_FAULTS:
            return self._log(replace(entry, fault=kind), await self._fault(wire, call.model, fault, prompt.tokens),
                             wire, now, state)
        answer = self.engine.answer(call.messages, call.schema, call.max_tokens, kind)
        await self.engine.process(prompt, answer.output_tokens)
        entry = replace(entry, completion_tokens=answer.output_tokens, fault=kind)
        return self._log(entry, Reply(200, wire.reply(call, prompt, answer)), wire, now, state)

    def _log(self, entry: Entry, reply: Reply, wire: Wire, now: float, state: dict[str, Limit] | None = None) -> Reply:
        """Record ``reply`` and give it the rate-limit headers of the windows at ``now`` (the call's
        admission, on the loop's clock; ``state``: the windows as they were then)."""
        self.stats.record(replace(entry, status=0 if reply.drop else reply.status))
        headers = wire.headers(state if state is not None else self.window.state(now), now + (self._epoch or 0.0))
        if wire.route == "chat":  # as OpenAI says it: the time from the call's admission to its reply
            headers["openai-processing-ms"] = str(round(1000 * (asyncio.get_running_loop().time() - now)))
        return replace(reply, headers={**headers, wire.id_header: entry.request_id, **reply.headers})

    def _retry_headers(self) -> tuple[bool, bool]:
        return self.settings.retry_after, self.settings.retry_after_ms

    def _too_long(self, tokens: int) -> str:
        window = self.engine.profile.context_window or 128_000
        return (f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {tokens} tokens. Please reduce the length of the messages.")

    async def _fault(self, wire: Wire, model: str, fault: Fault, prompt_tokens: int) -> Reply:
        """The reply of an admitted call that ``fault`` (not a content fault) replaces."""
        kind, minute = fault.kind, 60.0 / self.speed
        if kind in ("rate_limit", "rate_limit_retry_after"):
            says = kind == "rate_limit_retry_after"
            wait = (fault.seconds if fault.seconds is not None else 5.0 / self.speed) if says else None
            body, headers = wire.throttled(model, Throttle(None, wait, says or self.settings.retry_after,
                                                           self.settings.retry_after_ms))
            return Reply(429, body, headers)
        if kind == "timeout":
            await self.engine.occupy(fault.seconds or self.settings.hold_seconds or minute)
            return Reply(504, wire.error(504, "The server did not answer in time (an injected timeout)."))
        if kind == "drop":
            return Reply(0, drop=True)
        if kind == "malformed_body":
            return Reply(200, b'{"id": "chatcmpl-emulated", "object": "chat.completion", "choices": [{"index": 0, "mes')
        status, message, code = {
            "server_error": (500, "The server had an error while processing your request. Sorry about that!", None),
            "overloaded": (529 if wire.route == "messages" else 503,
                           "The server is overloaded. Please try again later.", None),
            "unauthorized": (401, "Incorrect API key provided (an injected fault).", "invalid_api_key"),
            "context_length": (400, self._too_long(prompt_tokens), "context_length_exceeded"),
        }[kind]
        return Reply(status, wire.error(status, message, code))


def dumps(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()
