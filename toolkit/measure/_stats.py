"""Bootstrap confidence intervals over documents, vectorised with numpy.

A resample draws the ``n`` evaluated documents ``n`` times with replacement; it is held as one row
of a ``(resamples, n)`` matrix of **weights** (how often each document was drawn), so a figure that
is a sum over documents is ``weights @ per_document_values`` for every resample at once. Every
configuration of one evaluation is scored on the same matrix: figures that compare two
configurations (an F1 ratio, a drop in points, a speedup) are **paired**, each resample comparing
both on the same documents. The interval is the percentile one: the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles (numpy's linear interpolation) of the resampled figure.

Micro-averaged F1 over a resample sums its documents' true positives, false positives and false
negatives first: ``F1 = 2 TP / (2 TP + FP + FN)`` (0 when the sum is empty), which equals
``2PR / (P + R)`` of :class:`toolkit.measure._evaluation.PRF`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
LEVEL = 0.95

__all__ = ["DEFAULT_RESAMPLES", "LEVEL", "document_seconds", "interval", "micro_f1", "ratio", "resample_weights"]


def resample_weights(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` integer weights: row ``b`` counts how often each of ``n`` documents was
    drawn in resample ``b`` (``n`` draws with replacement; seeded, so the same on every run)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs documents and resamples, got n={n}, resamples={resamples}")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (draws + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def micro_f1(counts: np.ndarray | Sequence[Sequence[int]], weights: np.ndarray) -> np.ndarray:
    """F1 of each resample: ``counts`` is ``(n, 3)`` true positives, false positives and false
    negatives per document; the resample's sums give its F1 (0 where it has none of them)."""
    tp, fp, fn = (weights @ np.asarray(counts, dtype=float).reshape(-1, 3)).T
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` per resample, NaN where the denominator is 0 (left out by
    :func:`interval`)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.full_like(denominator, np.nan), where=denominator != 0)


def interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """``[low, high]``: the percentile interval of the resampled ``values`` (NaN left out), or
    None when no resample gave a value."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def document_seconds(calls: Iterable[tuple[Sequence[str], float]], ids: Sequence[str], total: float) -> np.ndarray:
    """Each document's share of a run's ``total`` seconds, in the order of ``ids``: every call's
    seconds (``(document ids, seconds)``, retries and failed calls included) split equally among
    the documents it carried, then scaled so the shares add up to ``total`` (the time between calls
    and any overlap of concurrent calls spread in proportion). Without call seconds, ``total`` is
    split equally."""
    index = {doc_id: i for i, doc_id in enumerate(ids)}
    share = np.zeros(len(ids))
    for doc_ids, seconds in calls:
        carried = [index[d] for d in doc_ids if d in index]
        for i in carried:
            share[i] += seconds / len(carried)
    spent = share.sum()
    if spent <= 0:
        return np.full(len(ids), total / len(ids) if len(ids) else 0.0)
    return share * (total / spent)
