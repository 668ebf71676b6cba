"""measure"""

from toolkit.measure._bench import bench, bench_table
from toolkit.measure._calibration import calibrate, profile_from_results
from toolkit.measure._charts import (
    batch_fill_chart,
    bench_chart,
    chaos_timeline_chart,
    docs_per_batch_chart,
    eval_chart,
    png,
    position_chart,
    quality_curves_chart,
    quality_frontier_chart,
    runs_chart,
    speedup_curve_chart,
    use_offline_renderer,
)
from toolkit.measure._configs import BENCH_PLAN
from toolkit.measure._evaluate import eval_note, eval_table, evaluate
from toolkit.measure._evaluation import PRF, score
from toolkit.measure._optimize import optimize
from toolkit.measure._output import write_results
from toolkit.measure._results import BenchResult, ConfigFigures, EvalResult, read_result
from toolkit.measure._runs import priced

__all__ = [
    "BENCH_PLAN", "PRF", "BenchResult", "ConfigFigures", "EvalResult", "read_result", "batch_fill_chart", "bench",
    "bench_chart", "bench_table", "calibrate", "chaos_timeline_chart", "docs_per_batch_chart", "eval_chart",
    "eval_note", "eval_table", "evaluate", "optimize", "png", "priced", "position_chart", "profile_from_results",
    "quality_curves_chart", "quality_frontier_chart",
    "runs_chart", "score", "speedup_curve_chart", "use_offline_renderer", "write_results",
]
