"""Bootstrap intervals over documents: checked against bootstrap distributions computed by hand,
paired, and deterministic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from toolkit.measure import PRF
from toolkit.measure._stats import document_seconds, interval, micro_f1, ratio, resample_weights


def _frequencies(values: np.ndarray) -> dict[float, float]:
    atoms, counts = np.unique(np.round(values, 9), return_counts=True)
    return {float(a): c / len(values) for a, c in zip(atoms, counts)}


def test_two_documents_match_their_bootstrap_distribution_computed_by_hand() -> None:
    # a: one true positive (F1 1); b: one false positive and one miss (F1 0). The four equally likely
    # resamples are aa (F1 1), ab and ba (2/(2+1+1) = 0.5) and bb (0): P = 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are the two outer atoms and the 95% interval is [0, 1]; the middle
    # 40% (quantiles 0.3 and 0.7) is all 0.5.
    counts = [(1, 0, 0), (0, 1, 1)]
    f1 = micro_f1(counts, resample_weights(2, 4000, seed=0))
    freq = _frequencies(f1)
    assert set(freq) == {0.0, 0.5, 1.0}
    for atom, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert freq[atom] == pytest.approx(p, abs=0.03)
    assert interval(f1) == [0.0, 1.0]
    assert interval(f1, level=0.4) == [0.5, 0.5]


def test_three_documents_match_their_bootstrap_distribution_computed_by_hand() -> None:
    # a: a true positive, b: a false positive, c: a miss. A resample holding a i times has
    # F1 = 2i / (2i + 3 - i) = 2i / (i + 3): 0, 0.5, 0.8, 1 for i = 0..3, with i ~ Binomial(3, 1/3):
    # P = 8/27, 12/27, 6/27, 1/27 (cumulative 0.30, 0.74, 0.96, 1). The 2.5% quantile is 0; the 97.5%
    # one is 1 (0.963 < 0.975), the 95% one 0.8 (0.963 > 0.95); the 35% and 65% quantiles are 0.5.
    counts = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    f1 = micro_f1(counts, resample_weights(3, 4000, seed=1))
    exact = {0.0: 8 / 27, 0.5: 12 / 27, 0.8: 6 / 27, 1.0: 1 / 27}
    freq = _frequencies(f1)
    assert set(freq) == set(exact)
    for atom, p in exact.items():
        assert freq[atom] == pytest.approx(p, abs=0.03)
    assert interval(f1) == [0.0, 1.0]
    assert interval(f1, level=0.9) == [0.0, 0.8]
    assert interval(f1, level=0.3) == [0.5, 0.5]


def test_micro_f1_of_every_resample_sums_the_drawn_documents_counts() -> None:
    counts = [(2, 1, 0), (0, 0, 3), (1, 2, 1)]
    resamples = list(itertools.product(range(3), repeat=3))  # all 27 ordered draws of three documents
    weights = np.array([[draw.count(i) for i in range(3)] for draw in resamples])
    expected = [PRF(*(sum(counts[i][k] for i in draw) for k in range(3))).f1 for draw in resamples]
    assert micro_f1(counts, weights) == pytest.approx(expected)
    assert micro_f1([(0, 0, 0)], np.array([[1]])).tolist() == [0.0]  # nothing to find, nothing found


def test_resample_weights_draw_every_document_n_times_and_are_seeded() -> None:
    weights = resample_weights(7, 500, seed=3)
    assert weights.shape == (500, 7) and (weights.sum(axis=1) == 7).all() and weights.min() >= 0
    assert weights.mean() == pytest.approx(1.0)
    assert np.array_equal(weights, resample_weights(7, 500, seed=3))
    assert not np.array_equal(weights, resample_weights(7, 500, seed=4))
    with pytest.raises(ValueError):
        resample_weights(0, 10)


def test_identical_configurations_give_a_ratio_interval_of_exactly_one() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(30, 3))
    weights = resample_weights(30, 2000, seed=0)
    f1 = micro_f1(counts, weights)
    assert interval(ratio(f1, micro_f1(counts, weights))) == [1.0, 1.0]
    assert interval(f1 - micro_f1(counts, weights)) == [0.0, 0.0]


def test_pairing_keeps_a_small_difference_small() -> None:
    # the configuration differs from the reference in one of 40 documents: paired, the ratio moves
    # only where that document is drawn; resampled independently it carries all the noise of both
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 4, size=(40, 3))
    reference[0] = (3, 0, 0)
    config = reference.copy()
    config[0] = (0, 3, 3)  # its three true positives turned into false positives and misses
    weights = resample_weights(40, 2000, seed=0)
    paired = interval(ratio(micro_f1(config, weights), micro_f1(reference, weights)))
    unpaired = interval(ratio(micro_f1(config, resample_weights(40, 2000, seed=1)), micro_f1(reference, weights)))
    assert paired[1] <= 1.0 and paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 2


def test_ratio_leaves_out_resamples_with_a_zero_denominator() -> None:
    assert np.isnan(ratio(np.array([1.0, 2.0]), np.array([0.0, 1.0]))[0])
    assert interval(ratio(np.array([1.0, 2.0]), np.array([0.0, 1.0]))) == [2.0, 2.0]
    assert interval(np.array([np.nan])) is None


def test_document_seconds_split_each_call_and_add_up_to_the_run() -> None:
    calls = [(["a", "b"], 2.0), (["a"], 1.0), (["c", "b"], 4.0)]  # a: 1 + 1, b: 1 + 2, c: 2
    assert document_seconds(calls, ["a", "b", "c"], 14.0).tolist() == pytest.approx([4.0, 6.0, 4.0])
    assert document_seconds([], ["a", "b"], 3.0).tolist() == [1.5, 1.5]


def test_a_speedup_that_is_the_same_for_every_document_has_no_spread() -> None:
    weights = resample_weights(3, 1000, seed=0)
    reference, packed = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 1.5])
    assert interval(ratio(weights @ reference, weights @ packed)) == pytest.approx([2.0, 2.0])
