"""An eval or bench result as plain files under ``out``: ``results.json`` (settings, model and weights
hash, machine, figures), one polars-readable CSV and Parquet table per view, and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.measure._results import BenchResult, EvalResult


def write_results(result: EvalResult | BenchResult, out: str | Path) -> list[Path]:
    """``results.json`` plus CSV/Parquet tables and a PNG chart under ``out``."""
    import polars as pl

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    written = [folder / "results.json"]
    written[0].write_text(json.dumps(data, indent=2, default=str) + "\n")
    rows = [_flat(r) for r in result.rows()]
    tables = {"configs": pl.DataFrame(rows)}
    for table in ("by_position", "calls"):
        if data.get(table):
            tables[table] = pl.DataFrame(data[table])
    for name, frame in tables.items():
        frame = frame.with_columns(pl.lit(result.model_id).alias("model_id"), pl.lit(result.lm).alias("lm"))
        frame.write_csv(folder / f"{name}.csv")
        frame.write_parquet(folder / f"{name}.parquet")
        written += [folder / f"{name}.csv", folder / f"{name}.parquet"]
    from toolkit.measure._charts import bench_chart, eval_chart

    chart = eval_chart(tables["configs"]) if result.kind == "eval" else bench_chart(tables["configs"])
    chart.save(str(folder / f"{result.kind}.png"))
    written.append(folder / f"{result.kind}.png")
    return written


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A configuration as a table row: an interval ``x_ci`` as two columns ``x_ci_low``, ``x_ci_high``;
    the rate limits it paced by as ``rate_limits_rpm``, ``_tpm``, ``_window``, ``_source``; the F1
    after each pass (``strict_f1_by_pass``) as ``strict_f1_pass_1``, ``_2``, ..."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_ci"):
            out[f"{key}_low"], out[f"{key}_high"] = value or (None, None)
        elif key == "strict_f1_by_pass":
            out.update({f"strict_f1_pass_{i}": f1 for i, f1 in enumerate(value or [], start=1)})
        elif key == "rate_limits":
            out.update({f"{key}_{k}": (value or {}).get(k) for k in ("rpm", "tpm", "window", "source")})
        else:
            out[key] = value
    return out
