"""Fit a latency profile from a real run: seconds per call = overhead + prompt/rate + output/rate.

``calibrate(lm)`` runs a few documents at several batch sizes (so prompt and output sizes vary),
takes one record per successful call (tokens in, tokens out, seconds) and solves the least-squares
fit. The result is a latency :class:`~toolkit.lm.Profile` plus the fit's error,
so a planner or an ``emulated:`` run can predict what the real backend would do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.execution import AttemptRecord, RateLimitPolicy
from toolkit.lm import Capabilities, Profile
from toolkit.measure._results import BenchResult, EvalResult, read_result

if TYPE_CHECKING:
    from toolkit.extraction import ExtractionSettings


@dataclasses.dataclass(frozen=True)
class LatencyFit:
    overhead_seconds: float
    seconds_per_prompt_token: float
    seconds_per_output_token: float
    calls: int
    r2: float
    rmse_seconds: float
    mape: float  # mean absolute percentage error of the per-call prediction
    dropped_terms: tuple[str, ...] = ()  # terms fitted negative and removed (too little variety in the run)

    seconds_per_prompt_token_sq: float = 0.0  # attention: a long prompt costs more per token

    def predict(self, prompt_tokens: float, output_tokens: float) -> float:
        return (self.overhead_seconds + prompt_tokens * self.seconds_per_prompt_token
                + prompt_tokens ** 2 * self.seconds_per_prompt_token_sq + output_tokens * self.seconds_per_output_token)


def _nonnegative_lstsq(design: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """Least squares with every coefficient >= 0: the best fit over all subsets of terms whose
    unconstrained solution is non-negative (exact for the 3 or 4 terms used here)."""
    k = design.shape[1]
    best: tuple[float, np.ndarray, list[bool]] | None = None
    for mask in range(1, 2 ** k):
        keep = [bool(mask >> i & 1) for i in range(k)]
        sub, *_ = np.linalg.lstsq(design[:, keep], target, rcond=None)
        if (sub < 0).any():
            continue
        coef = np.zeros(k)
        coef[keep] = sub
        error = float(((design @ coef - target) ** 2).sum())
        if best is None or error < best[0] - 1e-12:
            best = (error, coef, keep)
    assert best is not None  # a single column always has a non-negative solution or a zero one
    return best[1], [bool(c > 0) or k_ for c, k_ in zip(best[1], best[2])]


Point = tuple[int, int, float]  # (prompt tokens, output tokens, seconds) of one successful call


def latency_points(records: Sequence[AttemptRecord]) -> list[Point]:
    """The successful calls of ``records`` that reported their token usage, as fit points."""
    return [(*r.usage, r.seconds) for r in records if r.outcome == "ok" and r.usage and r.usage[0]]


def fit_latency(points: Sequence[Point], quadratic: bool = False) -> LatencyFit:
    """Least squares over calls' ``(prompt tokens, output tokens, seconds)`` (non-negative
    coefficients). ``quadratic`` adds a prompt-squared term (self-attention over a long prompt, on a CPU)."""
    rows = [(p, o, t) for p, o, t in points if p and o is not None and t > 0]
    if len(rows) < 3:
        raise ValueError(f"need at least 3 successful calls with token usage to fit, got {len(rows)}")
    data = np.array(rows, dtype=float)
    columns = [np.ones(len(data)), data[:, 0], data[:, 1]] + ([data[:, 0] ** 2] if quadratic else [])
    names = ("overhead", "prompt", "output", "prompt_sq")[: len(columns)]
    design = np.column_stack(columns)
    target = data[:, 2]
    coef, keep = _nonnegative_lstsq(design, target)
    dropped = tuple(name for name, k in zip(names, keep) if not k)
    predicted = design @ coef
    residual = target - predicted
    total = ((target - target.mean()) ** 2).sum()
    return LatencyFit(
        overhead_seconds=float(coef[0]), seconds_per_prompt_token=float(coef[1]),
        seconds_per_output_token=float(coef[2]), calls=len(rows),
        seconds_per_prompt_token_sq=float(coef[3]) if quadratic else 0.0,
        r2=float(1 - (residual ** 2).sum() / total) if total > 0 else 1.0,
        rmse_seconds=float(np.sqrt((residual ** 2).mean())),
        mape=float(np.mean(np.abs(residual) / target)),
        dropped_terms=dropped,
    )


def fit_profile(points: Sequence[Point], lm: str, model_id: str, capabilities: Capabilities,
                description: str, quadratic: bool | None = None) -> dict[str, Any]:
    """Fit a latency profile on cold-cache calls' points of ``lm`` (whose ``capabilities`` say if
    it serves one call at a time and counts in its own tokens); the result reports the fit's error.
    ``quadratic`` (default: the backend's ``long_prompts_cost_more``) adds a prompt-squared term."""
    from toolkit.lm import names_backend

    fit = fit_latency(points, quadratic=capabilities.long_prompts_cost_more if quadratic is None else quadratic)
    profile = Profile(
        name=f"calibrated-{model_id.split('@')[0].replace('/', '-')}",
        overhead_seconds=round(fit.overhead_seconds, 4),
        prompt_tokens_per_second=round(1 / fit.seconds_per_prompt_token, 2) if fit.seconds_per_prompt_token else 1e9,
        output_tokens_per_second=round(1 / fit.seconds_per_output_token, 2) if fit.seconds_per_output_token else 1e9,
        prompt_seconds_per_token_sq=fit.seconds_per_prompt_token_sq,
        parallel_slots=1 if capabilities.concurrency == "1" else None,  # e.g. one llama context
        tokenizer=lm if names_backend(lm) else None,  # the backend's own tokenizer, found again by resolving it
        description=description,
        source=f"{platform.node() or 'this machine'}: {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores",
        fit={**dataclasses.asdict(fit), "model_id": model_id, "prompt_cache": False,
             "points": [[p, o, round(t, 3)] for p, o, t in points if p]},
    )
    return {
        "lm": lm, "model_id": model_id, "calls": fit.calls, "overhead_seconds": fit.overhead_seconds,
        "prompt_tokens_per_second": profile.prompt_tokens_per_second,
        "output_tokens_per_second": profile.output_tokens_per_second,
        "prompt_seconds_per_token_sq": fit.seconds_per_prompt_token_sq, "r2": fit.r2,
        "rmse_seconds": fit.rmse_seconds, "mape": fit.mape, "dropped_terms": list(fit.dropped_terms),
        "profile": profile.to_dict(),
    }


def profile_from_results(results: EvalResult | BenchResult | str | Path) -> Profile:
    """A profile fitted on the cold-cache calls an ``eval`` or ``bench`` run recorded (its result, or
    the ``results.json`` its ``--out`` wrote)."""
    result = results if isinstance(results, (EvalResult, BenchResult)) else read_result(results)
    rows = [c for c in result.calls if not c["prompt_cache"]]
    if not rows:
        raise ValueError(f"{results}: no recorded cold-cache calls (an eval or bench results.json of a real LM)")
    points = [(c["tokens_in"], c["tokens_out"], c["seconds"]) for c in rows
              if c["outcome"] == "ok" and c["tokens_in"] is not None]
    if result.capabilities is not None:
        saved = result.capabilities
        capabilities = Capabilities(**{**saved, "rate": RateLimitPolicy(**saved["rate"]),
                                       "layouts": tuple(saved["layouts"])})
    else:  # written before runs recorded their backend's capabilities
        from toolkit.lm import resolve_lm

        capabilities = resolve_lm(result.lm).capabilities
    where = f" {results}" if isinstance(results, (str, Path)) else ""
    fitted = fit_profile(points, result.lm, result.model_id or result.lm, capabilities,
                         description=f"fitted on the cold-cache calls of the {result.kind} run{where}")
    return Profile.from_dict(fitted["profile"])


def calibrate(lm: str = "local", corpus: str | None = None, docs: int = 8,
              batch_sizes: str | Sequence[int] = (1, 2, 4, 8), out: str | Path | None = None,
              progress: bool = False, quadratic: bool | None = None,
              settings: ExtractionSettings | None = None) -> dict[str, Any]:
    """Run ``docs`` documents once per batch size on ``lm`` with a cold prompt cache, fit, report.
    Default corpus: NCBI disease devel when ``../shared`` is present, else the bundled sample;
    default ``settings``: :class:`~toolkit.extraction.ExtractionSettings`' (the prompt to time)."""
    import time

    from toolkit.corpora import dedupe, load_corpus
    from toolkit.extraction import ExtractionSettings
    from toolkit.jobs import ExtractionService
    from toolkit.lm import resolve_lm

    sizes = [int(s) for s in batch_sizes.split(",")] if isinstance(batch_sizes, str) else list(batch_sizes)
    if corpus is None:  # abstracts of varied length make the prompt and output terms separable
        from toolkit.core import shared_dir

        corpus = "ncbi-disease" if shared_dir() is not None else "sample"
    documents = dedupe(load_corpus(corpus))[0][:docs]
    if not documents:
        raise ValueError(f"{corpus}: no documents")
    resolved = resolve_lm(lm, prompt_cache=False)
    service = ExtractionService(resolved, settings or ExtractionSettings())
    records: list[AttemptRecord] = []
    start = time.perf_counter()
    for size in sizes:
        run = service.run(documents, max_docs=size, progress=False)
        records.extend(run.attempts)
        if progress:
            print(f"calibrate: {size} doc(s)/call: {run.report.calls} calls", flush=True)
    result = fit_profile(latency_points(records), lm, resolved.model_id, resolved.capabilities,
                         description=f"fitted by `toolkit calibrate --lm {lm}` on {len(documents)} documents "
                                     f"of {corpus}",
                         quadratic=quadratic)
    result["run_seconds"] = time.perf_counter() - start
    from toolkit.lm import remember_calibration

    if lm.startswith("local"):  # a model file's measured speed: `models list` shows its tokens/s
        result["remembered"] = str(remember_calibration(result["profile"]))
    if out is not None:
        Path(out).write_text(json.dumps(result["profile"], indent=2) + "\n")
        result["written"] = str(out)
    return result
