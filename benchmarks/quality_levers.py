"""Quality levers on training documents: strict P/R/F1 and seconds of each setting (shots, demo
choice, passes, a compiled program) on the same NCBI disease **training** abstracts,
never the development or test split, so the settings can be chosen here and measured on the
development set afterwards (``eval``).

    python benchmarks/quality_levers.py [--lm local] [--docs 32] [--start 300] [--max-docs 8] \\
        [--setting '{"passes": 2}' ...] [--out results.json]

Each ``--setting`` is a JSON object of :class:`~toolkit.extraction.ExtractionSettings` fields
(default: the settings below). The documents are the training split's from ``--start`` on, less
every document any setting shows as a worked example, the same for every setting; each setting
runs them ``--max-docs`` per call in the backend's layout (the parallel layout on the local
model: each answer is the answer alone), with the prompt cache off. Prints one line per setting
and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from toolkit.corpora import gold_mapping, iter_gold
from toolkit.extraction import ExtractionSettings, demo_ids
from toolkit.lm import resolve_lm
from toolkit.measure._evaluation import score
from toolkit.measure._runs import run_config

TRAIN = "ncbi-disease-train"
SETTINGS = ({}, {"shots": 4}, {"demo_choice": "coverage"}, {"passes": 2}, {"demo_choice": "coverage", "passes": 2})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="local")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--start", type=int, default=300)
    parser.add_argument("--max-docs", type=int, default=8)
    parser.add_argument("--setting", action="append", type=json.loads, help="ExtractionSettings fields as JSON")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pairs = list(iter_gold(TRAIN))
    gold_map, scored = gold_mapping(e.type for _, gold in pairs for e in gold)
    settings = [ExtractionSettings(entity_types=scored, relationships=False, demos=TRAIN, **s)
                for s in args.setting or SETTINGS]
    shown = set().union(*(demo_ids(s) for s in settings))
    pairs = [p for p in pairs[args.start:] if p[0].id not in shown][: args.docs]
    documents, gold = [d for d, _ in pairs], {d.id: g for d, g in pairs}
    rows = []
    for s, asked in zip(settings, args.setting or SETTINGS):
        started = time.monotonic()
        run = run_config(resolve_lm(args.lm, prompt_cache=False), s, documents, "setting", args.max_docs, 8192)
        strict = score(gold, run.predictions, scored, gold_map=gold_map)
        by_pass = [score(gold, {d: [e for e in found if e.pass_no <= k] for d, found in run.predictions.items()},
                         scored, gold_map=gold_map).f1 for k in range(1, s.passes + 1)]
        figures = run.figures.to_json()
        row: dict[str, Any] = {
            "setting": asked, "documents": len(documents), "seconds": round(time.monotonic() - started, 1),
            "precision": round(strict.precision, 3), "recall": round(strict.recall, 3), "f1": round(strict.f1, 3),
            "f1_by_pass": [round(f, 3) for f in by_pass], "tp": strict.tp, "fp": strict.fp, "fn": strict.fn,
            **{k: figures.get(k) for k in ("lost", "tokens_in", "tokens_out", "entities", "ungrounded", "leaks",
                                          "pass_calls", "pass_entities")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"lm": args.lm, "start": args.start, "max_docs": args.max_docs,
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
