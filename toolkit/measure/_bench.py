"""``bench``: the configurations of :data:`toolkit.measure._configs.BENCH_PLAN` on the same documents, side
by side in one run: seconds, speed, cost, and for rate-limited backends the share of the limits'
bound each reached.

Emulated backends run in virtual time. A backend whose account has rate limits (said with
``rpm``/``tpm``, its own, or a provider across a network, whose limits it learns from its replies)
runs each configuration whole, one after another, pausing ``settle`` seconds between them so each
starts with the provider's window empty (interleaved chunks would share one account's window and
reset the pace at every chunk). A local model runs them in interleaved chunks, so drift of the
machine does not favour one configuration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from toolkit.core import Document, Layout, Prices, resolve_prices
from toolkit.corpora import first_documents
from toolkit.extraction import ExtractionSettings
from toolkit.lm import Capabilities, resolve_lm
from toolkit.measure._configs import BENCH_PLAN, BenchConfig, plan_for, rate_limit_bound, speedups
from toolkit.measure._results import BenchResult, ConfigFigures
from toolkit.measure._runs import ConfigRun, config_figures, machine, priced, run_config

BENCH_COLUMNS = ("config", "max_docs", "concurrency", "calls", "seconds", "docs_per_second", "extracted", "lost",
                 "tokens_in", "tokens_out", "cached_tokens", "cost_usd", "cost_per_1k_docs")


@dataclass(frozen=True)
class Schedule:
    """How a bench runs its configurations: in chunks of ``chunk`` documents, each configuration whole
    where ``chunk`` is every document, and ``pause`` seconds between configurations where ``limited``."""

    chunk: int
    limited: bool
    pause: float

    @classmethod
    def of(cls, caps: Capabilities, documents: int, max_docs: int, interleave: int | None, api_base: str | None,
           rpm: int | None, tpm: int | None, settle: float | None) -> Schedule:
        limited = not caps.virtual_time and (bool(rpm or tpm) or caps.rate.limited or caps.concurrency != "1")
        whole = caps.virtual_time or limited
        pause = settle if settle is not None else (caps.rate.window if caps.rate.limited and not (rpm or tpm)
                                                   else 0.0 if api_base and not (rpm or tpm) else 60.0)
        return cls(documents if whole else (interleave or 4 * max_docs), limited, pause)


def _run_configs(lm: str, settings: ExtractionSettings, documents: Sequence[Document], configs: list[BenchConfig],
                 cache_on: dict[str, bool], schedule: Schedule, max_docs: int, budget: int, concurrency: str,
                 api_base: str | None, rpm: int | None, tpm: int | None) -> dict[str, list[ConfigRun]]:
    """Each configuration's runs, chunk by chunk (see the module docstring), rotating which goes first."""
    chunk = schedule.chunk
    chunks = [documents[i:i + chunk] for i in range(0, len(documents), chunk)]
    parts: dict[str, list[ConfigRun]] = {c.name: [] for c in configs}
    for n, part in enumerate(chunks):
        for k, config in enumerate(configs[n % len(configs):] + configs[: n % len(configs)]):
            if schedule.limited and k:  # the provider's window empties of the configuration before
                time.sleep(schedule.pause)
            m, conc = config.settings(max_docs, concurrency)
            resolved = resolve_lm(lm, prompt_cache=cache_on[config.name], api_base=api_base)
            if config.cache == "warm":  # warm the prefix cache with a call outside the measurement
                run_config(resolved, settings, part[:1], "warm-up", 1, budget)
            parts[config.name].append(run_config(resolved, settings, part, config.name, m, budget, conc,
                                                 config.mode, rpm, tpm, api_base))
    return parts


def _figures(parts: dict[str, list[ConfigRun]], cache_on: dict[str, bool], caps: Capabilities,
             prices: Prices | None) -> list[ConfigFigures]:
    """Each configuration's figures, priced, with the share of the rate limits' bound it reached."""
    configs = []
    for name, runs in parts.items():
        figures = priced(config_figures(runs), prices).with_figures(prompt_cache=cache_on[name])
        bound = rate_limit_bound(caps, figures)
        configs.append(figures.with_figures(rate_limit_bound_docs_per_min=bound["bound"], bound_share=bound["share"]))
    return configs


class Bounds(TypedDict, total=False):
    """C's and D's bound, rate and share, as :class:`~toolkit.measure._results.BenchResult` keys them."""

    rate_limit_bound_docs_per_min: float | None
    c_docs_per_min: float | None
    bound_share: float | None
    d_rate_limit_bound_docs_per_min: float | None
    d_docs_per_min: float | None
    d_bound_share: float | None


def _bound(configs: Sequence[ConfigFigures], name: str) -> tuple[float, float | None, float | None] | None:
    """Configuration ``name``'s bound, documents per minute and share of the bound (None: no bound)."""
    row = next((c for c in configs if c.config == name), None)
    if row is None or not row.rate_limit_bound_docs_per_min:
        return None
    return (row.rate_limit_bound_docs_per_min, row.extracted / row.seconds * 60 if row.seconds else None,
            row.bound_share)


def _bounds(configs: Sequence[ConfigFigures]) -> Bounds:
    """C's and D's bound, rate and share, under the result's keys (where they had a bound)."""
    out: Bounds = {}
    if (c := _bound(configs, "C")) is not None:
        out.update({"rate_limit_bound_docs_per_min": c[0], "c_docs_per_min": c[1], "bound_share": c[2]})
    if (d := _bound(configs, "D")) is not None:
        out.update({"d_rate_limit_bound_docs_per_min": d[0], "d_docs_per_min": d[1], "d_bound_share": d[2]})
    return out


def bench(lm: str, corpus: str, docs: int, max_docs: int = 10, budget: int = 8192, concurrency: str = "auto:16",
          output_tokens_per_doc: int | None = None, interleave: int | None = None,
          types: Sequence[str] | None = None, layout: Layout = "auto", price: str | None = None,
          plan: Sequence[BenchConfig] = BENCH_PLAN,
          api_base: str | None = None, rpm: int | None = None, tpm: int | None = None,
          settle: float | None = None, batch_api: bool | None = None, **prompt: Any) -> BenchResult:
    """The configurations of ``plan`` (:data:`toolkit.measure._configs.BENCH_PLAN`) the backend can run,
    on the same documents: (A) one document per call, sequential, cold cache; (A') the same with
    the prompt cache warm (backends that have one); (B) packed, sequential; (C) packed, adaptive
    concurrency; (D) one document per call, adaptive concurrency, the same limiter (backends that
    run calls concurrently). Each is priced from the tokens it recorded (``price``: see
    :func:`~toolkit.measure._evaluate.evaluate`). ``api_base``: an OpenAI-compatible server;
    ``rpm``/``tpm``: the account's limits per minute (else the backend's, or learned from replies).
    How they run: the module docstring (``interleave``: a local model's chunk, default
    ``4 x max_docs``; ``settle``: seconds between configurations of a rate-limited backend,
    default the limits' window, a minute where a provider's limits are learned, 0 for a server at
    ``api_base`` without said limits). ``batch_api``: run the batch-API configuration (default:
    where the backend has one, but not at ``api_base``: llama-server and vLLM have none; True for a
    server that has, such as the project's emulator). ``prompt``: the worked examples and passes, as
    :class:`~toolkit.extraction.ExtractionSettings` takes them (``demos``, ``shots``, ...)."""
    documents = first_documents(corpus, docs)
    probe = resolve_lm(lm, api_base=api_base)
    prices = resolve_prices(probe.priced_as, price)
    asked: dict[str, Any] = {**({"entity_types": tuple(types)} if types else {}),  # else the defaults
                             **({"output_tokens_per_doc": output_tokens_per_doc} if output_tokens_per_doc else {})}
    settings = ExtractionSettings(relationships=False, layout=layout, **prompt, **asked)
    caps = probe.capabilities
    configs_run = [c for c in plan_for(caps, plan)
                   if c.mode != "batch-api" or (batch_api if batch_api is not None else not api_base)]
    schedule = Schedule.of(caps, len(documents), max_docs, interleave, api_base, rpm, tpm, settle)
    cache_on = {c.name: c.cache_on(caps) for c in configs_run}
    parts = _run_configs(lm, settings, documents, configs_run, cache_on, schedule, max_docs, budget, concurrency,
                         api_base, rpm, tpm)
    configs = _figures(parts, cache_on, caps, prices)
    return BenchResult(
        lm=lm, model_id=probe.model_id, emulated=probe.emulated, corpus=corpus, documents=len(documents),
        max_docs=max_docs, budget=budget, concurrency=concurrency, interleaved_chunk=schedule.chunk,
        layout=caps.layout(layout), api_base=api_base, rpm=rpm, tpm=tpm,
        settle_seconds=schedule.pause if schedule.limited else None, prompt_cache_available=caps.prompt_cache,
        capabilities=caps.to_dict(), settings=settings.to_dict(), priced_as=prices.model if prices else None,
        prices=prices.to_dict() if prices else None, machine=machine(), configs=tuple(configs),
        calls=() if probe.emulated else tuple(c for name, runs in parts.items() for r in runs
                                              for c in r.calls(cache_on[name])),
        speedups=speedups({c.config: c.seconds for c in configs if c.seconds is not None}),
        lost=sum(c.lost for c in configs),
        **_bounds(configs),
        profile=probe.engine.profile.to_dict() if probe.emulated and probe.engine is not None else None)


def bench_table(result: BenchResult) -> list[dict[str, Any]]:
    """A bench result's configurations as the CLI prints them and ``03_measure`` shows them (time,
    documents, tokens and cost)."""
    return [{k: row.get(k) for k in BENCH_COLUMNS} for row in result.rows()]
