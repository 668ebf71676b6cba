"""testing"""

from toolkit.testing._chaos import FakeProvider, Faults, default_policy, run_chaos

__all__ = [
    "FakeProvider", "Faults", "default_policy", "run_chaos",
]
