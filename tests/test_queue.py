"""BatchQueue: the original FIFO contract, with the budget counting prompt and output reserves."""

from __future__ import annotations

import pytest

from toolkit import BatchQueue, Document, PackingSettings

# prompt 100 + per document (overhead 10 + output 40) = 50: capacity is 1000 - 100 = 900.
SETTINGS = PackingSettings(token_budget=1000, prompt_tokens=100, doc_overhead_tokens=10,
                           output_tokens_per_doc=40, max_docs=4)


def docs(n: int) -> list[Document]:
    return [Document(f"d{i}", f"text {i}") for i in range(n)]


def test_empty_queue_returns_none():
    queue = BatchQueue()
    assert queue.get_next_batch() is None
    assert len(queue) == 0


def test_fifo_order_and_drain():
    queue = BatchQueue(settings=SETTINGS)
    for d in docs(6):
        queue.add_document(d, 100)
    first = queue.get_next_batch()
    second = queue.get_next_batch()
    assert [d.id for d in first] == ["d0", "d1", "d2", "d3"]  # max_docs = 4
    assert [d.id for d in second] == ["d4", "d5"]
    assert queue.get_next_batch() is None


def test_budget_counts_prompt_and_output():
    queue = BatchQueue(settings=SETTINGS)
    for d in docs(3):
        queue.add_document(d, 400)  # cost 450 each: two fill the 900 capacity exactly
    assert len(queue.get_next_batch()) == 2
    assert len(queue.get_next_batch()) == 1


def test_one_token_over_closes_the_batch():
    queue = BatchQueue(settings=SETTINGS)
    queue.add_document("a", 400)
    queue.add_document("b", 401)
    assert queue.get_next_batch() == ["a"]
    assert queue.get_next_batch() == ["b"]


def test_oversize_document_gets_its_own_flagged_batch():
    queue = BatchQueue(settings=SETTINGS)
    queue.add_document("small", 10)
    queue.add_document("huge", 5000)
    queue.add_document("after", 10)
    batches = [queue.next_batch() for _ in range(3)]
    assert [b.document_ids for b in batches] == [["small"], ["huge"], ["after"]]
    assert [b.oversize for b in batches] == [False, True, False]
    assert batches[1].total_token_count == 5000  # not truncated
    assert queue.next_batch() is None


def test_token_budget_argument_overrides_the_default():
    queue = BatchQueue(settings=SETTINGS)
    for d in docs(4):
        queue.add_document(d, 100)
    assert len(queue.get_next_batch(token_budget=400)) == 2  # capacity 300 = 2 x 150


def test_next_batch_carries_the_reserves():
    queue = BatchQueue(settings=SETTINGS)
    queue.add_document("a", 100)
    batch = queue.next_batch()
    assert batch.budget_tokens == 100 + 100 + 50
    assert batch.is_within_budget(SETTINGS.token_budget)


def test_min_docs_holds_back_until_closed():
    queue = BatchQueue(settings=SETTINGS.replace(min_docs=3))
    queue.add_document("a", 10)
    queue.add_document("b", 10)
    assert queue.get_next_batch() is None and len(queue) == 2
    queue.add_document("c", 10)
    assert queue.get_next_batch() == ["a", "b", "c"]
    queue.add_document("d", 10)
    assert queue.get_next_batch() is None
    queue.close()
    assert queue.get_next_batch() == ["d"]
    with pytest.raises(RuntimeError):
        queue.add_document("e", 1)


@pytest.mark.parametrize(("count", "error"), [(-1, ValueError), (1.5, TypeError), (None, TypeError), (True, TypeError)])
def test_bad_token_counts_are_rejected(count, error):
    with pytest.raises(error):
        BatchQueue().add_document("d", count)


def test_zero_token_document_is_accepted():
    queue = BatchQueue()
    queue.add_document("empty", 0)
    assert queue.get_next_batch() == ["empty"]


@pytest.mark.parametrize(
    "changes",
    [dict(token_budget=0), dict(max_docs=0), dict(min_docs=0), dict(min_docs=11),
     dict(token_budget=500, prompt_tokens=300, output_tokens_per_doc=200), dict(strategy="lifo")],
)
def test_invalid_settings_fail_clearly(changes):
    with pytest.raises(ValueError):
        PackingSettings(**changes)
