"""A provider's prompt cache: its rules (:class:`CacheRules`, data a profile or a backend states)
and the cache itself (:class:`PrefixCache`, what the emulated provider keeps).

Providers cache a prompt's prefix, not the prompt: OpenAI caches automatically once a prompt
reaches 1,024 tokens, the longest prefix already seen in steps of 128 tokens, for 5-10 minutes of
inactivity, and its cached tokens count towards the tokens-per-minute limit. Anthropic caches only
the prefix the client marks (``cache_control``), when it reaches the model's minimum (1,024 or
2,048 tokens), for 5 minutes refreshed by each hit, and cached reads do not count towards its
input-tokens-per-minute limit. The same numbers tell the client what to expect (the discount it
may take off its own rate-limit charge) and tell the emulated server what to do.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CacheRules:
    """How a provider's prompt cache behaves.

    ``min_tokens``: the shortest prefix it caches; ``increment``: beyond it, the cached prefix grows
    in steps of this many tokens (automatic caches); ``ttl_seconds``: an entry unused this long is
    gone (None: never; each hit refreshes it); ``counts_towards_tpm``: cached tokens count towards
    the tokens-per-minute limit; ``automatic``: every prompt's prefix is cached (OpenAI), else only
    the prefix the client marks (Anthropic: the system message and worked examples)."""

    min_tokens: int = 1024
    increment: int = 128
    ttl_seconds: float | None = 300.0
    counts_towards_tpm: bool = True
    automatic: bool = True

    def __post_init__(self) -> None:
        if self.min_tokens < 0 or self.increment < 1 or (self.ttl_seconds is not None and self.ttl_seconds <= 0):
            raise ValueError("cache rules: min_tokens >= 0, increment >= 1, ttl_seconds > 0 or None")

    def cacheable(self, prefix_tokens: int) -> int:
        """Tokens of a shared prefix of ``prefix_tokens`` the cache can serve: 0 under the minimum;
        else (automatic) rounded down to the minimum plus whole increments, (marked) all of it."""
        if prefix_tokens < max(1, self.min_tokens):
            return 0
        if not self.automatic:
            return prefix_tokens
        return self.min_tokens + (prefix_tokens - self.min_tokens) // self.increment * self.increment

    def boundaries(self, tokens: int) -> range:
        """The prefix lengths an automatic cache keeps for a prompt of ``tokens`` tokens."""
        first = max(self.increment, self.min_tokens)
        return range(first, tokens + 1, self.increment)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: CacheRules | dict[str, Any] | None) -> CacheRules | None:
        return cls(**value) if isinstance(value, dict) else value


OPENAI = CacheRules()  # automatic, 1,024 tokens then steps of 128, cached tokens count towards TPM
ANTHROPIC = CacheRules(min_tokens=1024, increment=1, ttl_seconds=300.0, counts_towards_tpm=False, automatic=False)
LAST_PROMPT = CacheRules(min_tokens=0, increment=16, ttl_seconds=None)  # a profile's bare ``prompt_cache: true``


def prefix_keys(token_ids: Sequence[int], lengths: Sequence[int]) -> list[tuple[int, Hashable]]:
    """(length, key) of each prefix of ``token_ids`` of the given increasing ``lengths``: the key
    is a digest of the prefix's tokens (one pass over them)."""
    digest = hashlib.blake2b(digest_size=16)
    keys: list[tuple[int, Hashable]] = []
    done = 0
    for n in lengths:
        digest.update(array("I", token_ids[done:n]).tobytes())
        done = n
        keys.append((n, digest.copy().digest()))
    return keys


class PrefixCache:
    """Many recent prefixes, each kept until ``ttl`` seconds (of the caller's clock) after its last
    use, at most ``max_entries`` of them (the least recently used go first)."""

    def __init__(self, ttl: float | None, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def lookup(self, prefixes: Sequence[tuple[int, Hashable]], now: float) -> int:
        """Tokens of the longest of ``prefixes`` (increasing lengths) cached at ``now``, its entries
        refreshed; 0 on a miss."""
        hit: list[Hashable] = []
        length = 0
        for n, key in prefixes:
            expiry = self._expiry.get(key)
            if expiry is None or expiry <= now:
                break
            hit.append(key)
            length = n
        self._touch(hit, now)
        return length

    def store(self, prefixes: Sequence[tuple[int, Hashable]], now: float) -> None:
        """Keep ``prefixes`` (a prompt the provider has just processed)."""
        self._touch([key for _, key in prefixes], now)

    def _touch(self, keys: Sequence[Hashable], now: float) -> None:
        expiry = now + self.ttl if self.ttl is not None else float("inf")
        for key in keys:
            self._expiry[key] = expiry
            self._expiry.move_to_end(key)
        while self._expiry and (len(self._expiry) > self.max_entries or next(iter(self._expiry.values())) <= now):
            self._expiry.popitem(last=False)
