"""The executor's decision step, pure: given one (sub-)batch's attempts so far and the policy, what
to do next. Like tenacity's ``iter(retry_state)``, it returns an action and the call loop around
it (:mod:`toolkit.execution._executor`) only carries it out, so every retry, split, failure and re-send is
decided here and unit-tested without an event loop.

Order of the checks (each document ends extracted, failed with a reason, or, if the run stops,
pending): a batch that cannot be sent as it is is split at once (a single document fails); after
``max_attempts`` calls a batch is split in halves (a single document fails with its last error);
an error waits its backoff (or the provider's ``Retry-After``, which pauses every call) before
the next call; a call is made only while the packed batch's call budget lasts. Documents a reply
left out are re-sent at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from toolkit.core import redact
from toolkit.execution._errors import ContextLengthExceeded, ExtractionError, RateLimited, Unsendable
from toolkit.execution._policies import ExecutionPolicy


@dataclass(frozen=True)
class BatchState:
    """One (sub-)batch's attempts so far. ``error``: the last call's (None if it replied or none
    was made); ``waited``: the wait after that error is over."""

    remaining: tuple[str, ...]
    attempts: int = 0
    last_error: str = "no attempt made"
    error: ExtractionError | None = None
    waited: bool = True
    throttled: int = 0  # 429s that did not count as attempts

    def replied(self, missing: tuple[str, ...], detail: str | None) -> BatchState:
        """The next state after a reply that left ``missing`` out (``detail``: the reply's account)."""
        last: str | None = self.last_error
        if missing:
            last = redact(f"missing from the reply of attempt {self.attempts}" + (f": {detail}" if detail else ""))
        return replace(self, remaining=missing, last_error=last or "", error=None, waited=True)

    def failed(self, error: ExtractionError, free: bool = False) -> BatchState:
        """The next state after a call that raised ``error``; ``free``: it does not count as an
        attempt (see :func:`is_free`)."""
        if free:
            return replace(self, attempts=self.attempts - 1, throttled=self.throttled + 1, last_error=describe(error),
                           error=error, waited=False)
        return replace(self, last_error=describe(error), error=error, waited=False)

    def called(self) -> BatchState:
        return replace(self, attempts=self.attempts + 1)

    def after_wait(self) -> BatchState:
        return replace(self, waited=True)


@dataclass(frozen=True)
class Call:
    """Send the remaining documents now."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds`` before the next call; ``pause_all``: a provider's Retry-After, which holds
    every call of the run, not only this batch's."""

    seconds: float
    pause_all: bool = False


@dataclass(frozen=True)
class Split:
    """Run the two halves of ``ids`` as batches of their own (sharing the call budget)."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class Fail:
    ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Done:
    pass


Action = Call | Wait | Split | Fail | Done


def describe(error: ExtractionError) -> str:
    """An error as a failure reason or a call's record: its kind and message, redacted."""
    return redact(f"{error.kind}: {error}") or error.kind


def is_retry(error: ExtractionError | None) -> bool:
    """Whether ``error`` is one a later call may cure (counted as a retry)."""
    return error is not None and not isinstance(error, Unsendable)


def is_free(state: BatchState, error: ExtractionError | None, policy: ExecutionPolicy) -> bool:
    """Whether the failed call of ``state`` is a 429 that counts neither as an attempt nor against
    the call budget (the first ``free_throttles`` of a batch)."""
    return isinstance(error, RateLimited) and state.throttled < policy.retry.free_throttles


def next_action(state: BatchState, budget_left: int, policy: ExecutionPolicy, rng: random.Random) -> Action:
    """What to do with ``state`` (see the module docstring). ``budget_left``: calls left to the
    packed batch this (sub-)batch belongs to. Fatal errors never get here: they stop the run."""
    ids = state.remaining
    if not ids:
        return Done()
    if isinstance(state.error, Unsendable):
        if len(ids) > 1:
            return Split(ids)
        too_long = isinstance(state.error, ContextLengthExceeded)
        return Fail(ids, f"document too long for the model's context ({state.error})" if too_long
                    else f"cannot be sent: {state.last_error}")
    if state.attempts >= policy.retry.max_attempts:
        return Split(ids) if len(ids) > 1 else Fail(ids, state.last_error)
    if not state.waited:
        error = state.error
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return Wait(policy.retry.retry_after(error.retry_after), pause_all=True)
        return Wait(policy.retry.delay(max(1, state.attempts + state.throttled), rng))
    if budget_left <= 0:
        return Fail(ids, f"call budget spent; last error: {state.last_error}")
    return Call(ids)
