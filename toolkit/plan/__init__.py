"""Planning hours and money before a run: the grid of budgets and documents per call predicted from a
provider's profile (or from measured results), the time and cost of a corpus, and what prompt caching
and batch APIs change."""

from toolkit.plan._planner import (
    GRID_COLUMNS,
    MEASURED_COLUMNS,
    Measured,
    plan,
    plan_summary,
    predict,
    profile_capabilities,
    resolve_profile,
    write_plan,
)
from toolkit.plan._result import DEFAULT_OUTPUT_PER_DOC, Plan

__all__ = [
    "DEFAULT_OUTPUT_PER_DOC", "GRID_COLUMNS", "MEASURED_COLUMNS", "Measured", "Plan", "plan", "plan_summary", "predict",
    "profile_capabilities", "resolve_profile", "write_plan",
]
