"""Compare the local models on NCBI devel: disease-mention F1 and seconds per document, at one and
at several documents per call (the figures behind the README's model table and default choice).

    python benchmarks/local_models.py [--docs 8] [--max-docs 1,4] [--models all] [--out FILE.jsonl]

Prints one JSON line per model. Types: DISEASE only, no relationships, llama.cpp prefix cache on.
"""

from __future__ import annotations

import argparse
import json
import time

from toolkit.corpora import iter_gold
from toolkit.extraction import ExtractionSettings
from toolkit.jobs import ExtractionService
from toolkit.lm import _weights as weights
from toolkit.measure import score


def measure(model: str, docs: int, sizes: list[int]) -> dict:
    pairs = list(iter_gold("ncbi-disease"))[:docs]
    documents = [d for d, _ in pairs]
    gold = {d.id: g for d, g in pairs}
    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False, layout="packed")
    service = ExtractionService(f"local:{model}", settings)
    out: dict = {"model": model, "docs": docs}
    for size in sizes:
        start = time.perf_counter()
        run = service.run(documents, max_docs=size, progress=False)
        seconds = time.perf_counter() - start
        pred = {o.id: o.entities for o in run.report.outcomes if o.status == "extracted"}
        strict, lenient = score(gold, pred), score(gold, pred, lenient=True)
        out[f"max_docs_{size}"] = {
            "seconds": round(seconds, 1), "s_per_doc": round(seconds / docs, 2), "calls": run.report.calls,
            "extracted": run.report.extracted, "strict_f1": round(strict.f1, 3), "lenient_f1": round(lenient.f1, 3),
            "strict": strict.to_dict(), "tokens_in": sum(a.tokens_in or 0 for a in run.attempts),
            "tokens_out": sum(a.tokens_out or 0 for a in run.attempts), "validation": vars(run.validation),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--max-docs", default="1,4")
    parser.add_argument("--models", default="all")
    parser.add_argument("--out")
    args = parser.parse_args()
    models = list(weights.MODELS) if args.models == "all" else args.models.split(",")
    for model in models:
        line = json.dumps(measure(model, args.docs, [int(x) for x in args.max_docs.split(",")]))
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
