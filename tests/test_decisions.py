"""The executor's decision step, without an event loop: retry, wait, split, fail, re-send."""

from __future__ import annotations

import random

import pytest

from toolkit.execution import ExecutionPolicy, RetryPolicy
from toolkit.execution._decisions import BatchState, Call, Done, Fail, Split, Wait, next_action
from toolkit.execution._errors import ContextLengthExceeded, MalformedReply, RateLimited, ServerError, Unsendable

POLICY = ExecutionPolicy(retry=RetryPolicy(max_attempts=3, delays=(2.0, 4.0), jitter=0.0))
RNG = random.Random(0)


def decide(state: BatchState, budget: int = 10) -> object:
    return next_action(state, budget, POLICY, RNG)


def test_a_fresh_batch_is_called_and_a_finished_one_is_done() -> None:
    assert decide(BatchState(("a", "b"))) == Call(("a", "b"))
    assert decide(BatchState(())) == Done()


def test_an_error_waits_its_backoff_then_calls_again() -> None:
    state = BatchState(("a",)).called().failed(ServerError("500"))
    assert decide(state) == Wait(2.0)
    assert decide(state.after_wait()) == Call(("a",))
    second = state.after_wait().called().failed(ServerError("500"))
    assert decide(second) == Wait(4.0)


def test_retry_after_is_waited_exactly_and_pauses_every_call() -> None:
    state = BatchState(("a",)).called().failed(RateLimited("429", retry_after=7.5))
    assert decide(state) == Wait(7.5, pause_all=True)


def test_after_the_last_attempt_a_batch_splits_and_a_document_fails_with_its_error() -> None:
    state = BatchState(("a", "b"))
    for _ in range(3):
        state = state.called().failed(MalformedReply("bad json")).after_wait()
    assert decide(state) == Split(("a", "b"))
    alone = BatchState(("a",), attempts=3, last_error=state.last_error, waited=True)
    assert decide(alone) == Fail(("a",), "malformed: bad json")


def test_a_batch_that_cannot_be_sent_splits_at_once_and_its_document_fails_alone() -> None:
    assert decide(BatchState(("a", "b")).called().failed(ContextLengthExceeded("too long"))) == Split(("a", "b"))
    single = decide(BatchState(("a",)).called().failed(ContextLengthExceeded("too long")))
    assert isinstance(single, Fail) and single.reason.startswith("document too long")
    encoding = decide(BatchState(("a",)).called().failed(Unsendable("surrogates not allowed")))
    assert isinstance(encoding, Fail) and encoding.reason == "cannot be sent: unsendable: surrogates not allowed"


def test_documents_a_reply_left_out_are_re_sent_at_once_with_the_reply_s_account() -> None:
    state = BatchState(("a", "b")).called().replied(("b",), "the reply named ids that were not asked for: ['B']")
    assert decide(state) == Call(("b",))
    assert state.last_error == "missing from the reply of attempt 1: the reply named ids that were not asked for: ['B']"


def test_no_call_once_the_budget_is_spent_and_the_reason_keeps_the_last_error() -> None:
    state = BatchState(("a",), last_error="missing from the reply of attempt 2")
    assert decide(state, budget=0) == Fail(("a",), "call budget spent; last error: missing from the reply of attempt 2")


@pytest.mark.parametrize("seed", range(5))
def test_jitter_stays_within_its_bound(seed: int) -> None:
    policy = ExecutionPolicy(retry=RetryPolicy(delays=(2.0,), jitter=0.25))
    wait = next_action(BatchState(("a",)).called().failed(ServerError("500")), 5, policy, random.Random(seed))
    assert isinstance(wait, Wait) and 2.0 <= wait.seconds <= 2.5
