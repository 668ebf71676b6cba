"""Properties of the whole-corpus packer, searched by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from toolkit import Document, Packer, PackingSettings

token_lists = st.lists(st.integers(min_value=0, max_value=3000), min_size=0, max_size=80)
packing = st.builds(
    PackingSettings,
    token_budget=st.integers(min_value=400, max_value=4000),
    max_docs=st.integers(min_value=1, max_value=10),
    prompt_tokens=st.integers(min_value=0, max_value=100),
    doc_overhead_tokens=st.integers(min_value=0, max_value=20),
    output_tokens_per_doc=st.integers(min_value=0, max_value=150),
    strategy=st.sampled_from(["fifo", "ffd"]),
)


def run(tokens: list[int], s: PackingSettings):
    documents = [Document(f"d{i}", "x") for i in range(len(tokens))]
    return documents, Packer(s).pack(documents, token_counts=tokens)


@given(token_lists, packing)
@settings(max_examples=300, deadline=None)
def test_every_document_appears_exactly_once(tokens, s):
    documents, result = run(tokens, s)
    packed = [i for b in result.batches for i in b.document_ids]
    assert sorted(packed) == sorted(d.id for d in documents)
    assert len(packed) == len(set(packed))
    assert result.documents == len(documents)


@given(token_lists, packing)
@settings(max_examples=300, deadline=None)
def test_budget_and_max_docs_hold_except_single_oversize(tokens, s):
    _, result = run(tokens, s)
    for batch in result.batches:
        assert 1 <= batch.batch_size <= s.max_docs
        if batch.oversize:
            assert batch.batch_size == 1 and not batch.is_within_budget(s.token_budget)
        else:
            assert batch.is_within_budget(s.token_budget)
            assert batch.budget_tokens == s.prompt_tokens + sum(s.cost(t) for t in batch.token_counts)


@given(token_lists, packing)
@settings(max_examples=300, deadline=None)
def test_fifo_keeps_input_order(tokens, s):
    documents, result = run(tokens, s.replace(strategy="fifo"))
    assert [i for b in result.batches for i in b.document_ids] == [d.id for d in documents]


@given(token_lists, packing)
@settings(max_examples=300, deadline=None)
def test_ffd_never_uses_more_batches_than_fifo(tokens, s):
    _, fifo = run(tokens, s.replace(strategy="fifo"))
    _, ffd = run(tokens, s.replace(strategy="ffd"))
    assert len(ffd.batches) <= len(fifo.batches)
    assert ffd.report()["fill_ratio"] >= fifo.report()["fill_ratio"] - 1e-12


@given(token_lists, packing)
@settings(max_examples=200, deadline=None)
def test_fifo_closes_a_batch_only_when_the_next_document_does_not_fit(tokens, s):
    _, result = run(tokens, s.replace(strategy="fifo"))
    batches = result.batches
    for batch, following in zip(batches, batches[1:]):
        if batch.batch_size < s.max_docs and not batch.oversize:
            nxt = following.token_counts[0]
            assert batch.budget_tokens + s.cost(nxt) > s.token_budget
