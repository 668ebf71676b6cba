"""The emulated provider: a provider's latency and rate limits as data, answers from a gazetteer.

A :class:`Profile` (JSON in ``toolkit/lm/profiles/``) says how long a call takes (overhead plus
prompt and output tokens at fixed rates), what the server accepts per minute, how many calls it
serves at once and how often it fails. :class:`EmulatedEngine` is an async DSPy engine: it reads
the documents out of the real prompt, answers with a deterministic extractor (a gazetteer built
from training annotations), sleeps on the event loop's clock, so runs of thousands of documents go
through the real executor and DSPy module in virtual time. Everything it produces is emulated: the
model id starts with ``emulated:`` and summaries carry ``"emulated": true``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from toolkit.execution import (
    AuthenticationFailed,
    CallTimeout,
    ContextLengthExceeded,
    RateLimited,
    RateLimitPolicy,
    ServerError,
    SlidingWindowLimiter,
)
from toolkit.lm._engine import make_response, request_messages, schema_of
from toolkit.lm._gazetteer import Gazetteer, default_gazetteer, documents_in_prompt
from toolkit.lm._prefixcache import PrefixCache, prefix_keys
from toolkit.lm._profiles import Profile, available_profiles, load_profile  # noqa: F401 - re-exported

TOKENIZER = "gpt-4o-mini"  # the emulated server counts prompt and output in this model's tokens


@dataclass(frozen=True)
class Prompt:
    """A prompt as the emulated server reads it: ``tokens``, of which ``cached`` its prompt cache
    serves, and the ``prefixes`` it keeps once the call is processed."""

    tokens: int
    cached: int
    prefixes: list[tuple[int, Hashable]]


@dataclass(frozen=True)
class Answer:
    """The emulated reply: its text, output tokens and finish reason (``stop`` or ``length``)."""

    text: str
    output_tokens: int
    finish: str


def emulated_reply(docs: list[dict[str, str]], schema: dict[str, Any] | None, fault: str | None,
                   gazetteer: Gazetteer, rng: random.Random) -> str:
    """The emulated answer to ``docs``: the gazetteer's mentions of the types ``schema`` asks for
    (all types without one), damaged as ``fault`` says (``rng`` draws which ids go missing)."""
    types, relationships = None, True
    if schema is not None:
        try:
            record = schema["properties"]["results"]["items"]["properties"]
            types = set(record["entities"]["items"]["properties"]["type"]["enum"])
            relationships = "relationships" in record
        except (KeyError, TypeError):
            types = None
    records: list[dict[str, Any]] = []
    for doc in docs:
        found = [{"text": t, "type": k} for t, k in gazetteer.find(doc.get("text", ""), 25)
                 if types is None or k in types]
        records.append({"id": doc["id"], "entities": found, **({"relationships": []} if relationships else {})})
    if fault == "missing_ids" and records:
        records = records[: rng.randrange(len(records))]
    if fault == "extra_ids":
        records.append({"id": f"ghost-{rng.randrange(10**6)}", "entities": [], "relationships": []})
    text = json.dumps({"results": records})
    if fault == "malformed":
        text = "Here are the entities: " + text[: len(text) // 3].replace('"', "'")
    if fault == "truncated":
        text = text[: max(1, len(text) // 2)]
    return text


class EmulatedEngine:
    """Async DSPy engine emulating ``profile`` (see module docstring)."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "max_tokens", "temperature"})

    def __init__(self, profile: Profile, seed: int = 0, gazetteer: Gazetteer | None = None,
                 cache: bool = True) -> None:
        """``cache``: False bypasses the profile's prompt cache (a cold-cache measurement)."""
        from toolkit.core import Faults

        self.profile = profile
        self.faults = Faults(**profile.faults)
        self.gazetteer = gazetteer
        self._rng = random.Random(seed)
        self._window = SlidingWindowLimiter(RateLimitPolicy(profile.requests_per_minute, profile.tokens_per_minute,
                                                            profile.window))
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self.rules = profile.cache_rules if cache else None
        ttl = self.rules.ttl_seconds if self.rules else None
        self.cache = PrefixCache(ttl / profile.speed if ttl is not None else None)
        self.rejected = 0
        self.calls = 0

    @property
    def name(self) -> str:
        return f"emulated:{self.profile.name}"

    def _semaphore(self) -> asyncio.Semaphore | None:
        if self.profile.parallel_slots is None:
            return None
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.profile.parallel_slots), loop
        return self._slots

    def reply(self, docs: list[dict[str, str]], schema: dict[str, Any] | None, fault: str | None) -> str:
        """The emulated answer to ``docs`` (see :func:`emulated_reply`), with this engine's gazetteer
        and draws; the batch API's emulated provider answers its lines with it too."""
        return emulated_reply(docs, schema, fault, self.gazetteer or default_gazetteer(), self._rng)

    def read(self, messages: list[dict[str, str]], now: float) -> Prompt:
        """``messages`` as this server sees them at ``now``: its tokens, those its cache serves. The
        first step of one call, as the in-process :meth:`complete` and the HTTP server
        (:mod:`toolkit.testing.serve`) both take it (then :meth:`counted`, :meth:`too_long`,
        :meth:`answer`, :meth:`process`), each with its own rate-limit window."""
        from toolkit.packing import get_counter

        prompt = "\n".join(m["content"] for m in messages)
        counter = get_counter(TOKENIZER)
        # an automatic cache keys prefixes by token ids: the prompt is encoded once for both
        ids = counter.encode(prompt) if self.rules is not None and self.rules.automatic and counter.encode else None
        tokens = len(ids) if ids is not None else counter.count(prompt)
        prefixes = self._prefixes(messages, ids) if self.rules else []
        return Prompt(tokens, self.cache.lookup(prefixes, now), prefixes)

    def counted(self, prompt: Prompt) -> int:
        """The prompt tokens the rate limit counts (cached ones only where the cache rules say)."""
        return prompt.tokens - (0 if self.rules is None or self.rules.counts_towards_tpm else prompt.cached)

    def too_long(self, prompt: Prompt, max_tokens: int) -> bool:
        return bool(self.profile.context_window and prompt.tokens + max_tokens > self.profile.context_window)

    def answer(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, max_tokens: int,
               fault: str | None) -> Answer:
        """The reply to ``messages`` (damaged as ``fault`` says) and its output tokens."""
        from toolkit.packing import get_counter

        text = self.reply(documents_in_prompt(messages), schema, fault)
        # a cut-off reply is one that used all of max_tokens
        output_tokens = max_tokens if fault == "truncated" else min(get_counter(TOKENIZER).count(text), max_tokens)
        return Answer(text, output_tokens, "length" if fault == "truncated" else "stop")

    async def process(self, prompt: Prompt, output_tokens: int) -> None:
        """Take the call's time (in one of the profile's slots); then its prompt is in the cache."""
        # latency: only the prompt tokens not read from the cache
        await self.occupy(self.profile.call_seconds(prompt.tokens - prompt.cached, output_tokens))
        self.cache.store(prompt.prefixes, asyncio.get_running_loop().time())  # later calls may read it

    async def occupy(self, seconds: float) -> None:
        """Hold one of the profile's parallel slots for ``seconds``."""
        slots = self._semaphore()
        if slots is None:
            return await asyncio.sleep(seconds)
        async with slots:
            await asyncio.sleep(seconds)

    async def complete(self, request: Any) -> Any:
        loop = asyncio.get_running_loop()
        messages = request_messages(request)
        max_tokens = request.config.max_tokens or 1024
        self.calls += 1
        prompt = self.read(messages, loop.time())
        wait = self._window.try_acquire(self.counted(prompt) + max_tokens, loop.time())
        if wait > 0:
            self.rejected += 1
            raise RateLimited("429 Too Many Requests (emulated server-side limit)",
                              retry_after=max(1.0 / self.profile.speed, wait))
        if self.too_long(prompt, max_tokens):
            raise ContextLengthExceeded(f"{prompt.tokens + max_tokens} tokens > context window")
        fault = self.faults.pick(self._rng)
        if fault == "unauthorized":
            raise AuthenticationFailed("401 Unauthorized (emulated)")
        if fault == "context_length":
            raise ContextLengthExceeded("maximum context length exceeded (emulated)")
        if fault in ("rate_limit", "rate_limit_retry_after"):
            after = 5.0 / self.profile.speed if fault.endswith("after") else None
            raise RateLimited("429 (emulated)", retry_after=after)
        if fault == "timeout":
            await self.occupy(60.0 / self.profile.speed)
            raise CallTimeout("no reply within 60 s (emulated)")
        answer = self.answer(messages, schema_of(request.config.response_format), max_tokens, fault)
        await self.process(prompt, answer.output_tokens)
        if fault == "server_error":
            raise ServerError("500 Internal Server Error (emulated)")
        return make_response(self.name, answer.text, answer.finish, prompt.tokens, answer.output_tokens,
                             cached=prompt.cached)

    def _prefixes(self, messages: list[dict[str, str]], ids: list[int] | None) -> list[tuple[int, Hashable]]:
        """The prefixes of the prompt the cache keeps, as (tokens, key): an automatic cache every
        step of the rules over the prompt's token ``ids``; else the prefix the client marks, the
        messages before the last one."""
        from toolkit.packing import estimate_tokens

        rules = self.rules
        assert rules is not None
        if rules.automatic:
            assert ids is not None, f"{TOKENIZER}: no token ids"
            return prefix_keys(ids, rules.boundaries(len(ids)))
        marked = "".join(m["content"] + "\n" for m in messages[:-1])
        tokens = rules.cacheable(estimate_tokens(marked, TOKENIZER))
        return [(tokens, marked)] if tokens else []

    def stream(self, request: Any):  # pragma: no cover - DSPy streams only when asked to
        raise NotImplementedError("the emulated provider does not stream")

    async def aclose(self) -> None:
        pass

    def sync_face(self) -> _SyncEmulated:
        return _SyncEmulated(self)


class _SyncEmulated:
    """Synchronous face of the emulated engine (runs one call on a private loop, real time)."""

    supports_response_schema = True
    supported_params = EmulatedEngine.supported_params

    def __init__(self, engine: EmulatedEngine) -> None:
        self.engine = engine

    def complete(self, request: Any) -> Any:
        return asyncio.run(self.engine.complete(request))

    def stream(self, request: Any):  # pragma: no cover
        raise NotImplementedError("the emulated provider does not stream")

    def close(self) -> None:
        pass


def resolve(spec: str, profile: str, *, seed: int = 0, prompt_cache: bool = True, **_: Any) -> Any:
    """``emulated:PROFILE[@SPEED]``: a shipped profile's name or a profile JSON (default hosted-api);
    at a ``SPEED`` other than 1 it runs in real time, that many times faster (to share a clock
    across processes: Ray workers). ``prompt_cache`` False bypasses the profile's prompt cache."""
    return from_profile(load_profile(profile or "hosted-api"), spec, seed, prompt_cache)


def from_profile(profile: Profile, spec: str | None = None, seed: int = 0, prompt_cache: bool = True) -> Any:
    """The emulated backend of ``profile``: pure asyncio (a virtual clock), the profile's limits as
    client-side limits, its prompt cache if it has one (and ``prompt_cache``: the client marks the
    prefix where the rules need it); every answer labelled emulated."""
    import dspy

    from toolkit.lm._backend import Capabilities, ResolvedLM

    engine = EmulatedEngine(profile, seed=seed, cache=prompt_cache)
    spec = spec or f"emulated:{profile.name}"
    lm = dspy.LM(engine.name, engine=engine.sync_face(), async_engine=engine, cache=False, num_retries=0)
    p = engine.profile
    capabilities = Capabilities(tokenizer=TOKENIZER, rate=RateLimitPolicy(p.requests_per_minute, p.tokens_per_minute,
                                                                          p.window),
                                call_timeout=None, prompt_cache=p.cache_rules is not None, cache=engine.rules,
                                virtual_time=p.speed == 1.0, emulated=True, time_scale=p.speed, batch_api=True)
    return ResolvedLM(spec, lm, engine.name, capabilities, engine, priced_as=p.priced_as)
