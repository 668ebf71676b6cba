"""Planning hours and money before a run: the grid of budgets and documents per call predicted from a
provider's profile (or from measured results), the time and cost of a corpus, and what prompt caching
and batch APIs change."""

from toolkit.plan._planner import (
    GRID_COLUMNS,
    MEASURED_COLUMNS,
    plan,
    plan_summary,
    predict,
    profile_capabilities,
    resolve_profile,
    write_plan,
)

__all__ = [
    "GRID_COLUMNS", "MEASURED_COLUMNS", "plan", "plan_summary", "predict", "profile_capabilities", "resolve_profile",
    "write_plan",
]
