"""The project's closed sets of words, each a ``Literal`` and the tuple of its values (for checks,
argparse ``choices`` and error messages): one place, so a setting, an option and a check agree."""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal["fifo", "ffd"]
"""How the packer fills batches: in reading order, or first-fit decreasing."""

Mode = Literal["sync", "batch-api"]
"""How a run's calls are made: as they go, or through the provider's batch API."""

RunnerName = Literal["local", "ray"]
"""Where a synchronous run's chunks are extracted: this process, or a pool of Ray workers."""

Layout = Literal["auto", "packed", "parallel"]
"""A batch as one packed prompt, or as one-document prompts decoded together (auto: the backend's)."""

DemoChoice = Literal["random", "coverage", "similar"]
"""How worked examples are drawn from a gold corpus (see :mod:`toolkit.extraction._demos`): once for
every call (random, coverage), or for each call by similarity to its documents (similar)."""

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
MODES: tuple[Mode, ...] = get_args(Mode)
RUNNERS: tuple[RunnerName, ...] = get_args(RunnerName)
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
DEMO_CHOICES: tuple[DemoChoice, ...] = get_args(DemoChoice)
