"""What a backend is and can do, said once where it is resolved and read everywhere else.

A backend module (``toolkit/lm/<name>.py``) has ``resolve(rest, **options) -> ResolvedLM`` for the
specs ``<name>`` and ``<name>:<rest>``; :func:`toolkit.lm.resolve_lm` finds it by name, so a new
backend (a Ray worker, a provider's batch API) is one new file. Nothing else asks which kind an LM
is: the packer's tokenizer, the default concurrency, rate limits and timeout, the layouts, whether
a prompt cache or a virtual clock exists are :class:`Capabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.execution import RateFeed, RateLimitPolicy
from toolkit.lm._prefixcache import CacheRules

LAYOUTS = ("packed", "parallel")


@dataclass(frozen=True)
class Capabilities:
    tokenizer: str  # the model name the packer counts tokens with
    concurrency: str = "auto:16"  # default calls in flight: "1" (one context) or "auto:N"
    rate: RateLimitPolicy = field(default_factory=RateLimitPolicy)  # client-side limits it needs
    call_timeout: float | None = 900.0  # seconds before a call is abandoned (None: never)
    layouts: tuple[str, ...] = ("packed",)  # the layouts it runs, its default first
    prompt_cache: bool = False  # repeated prompt prefixes are cached (A' can be measured)
    cache: CacheRules | None = None  # the rules of the provider's cache, when known and on for this LM
    batch_api: bool = False  # a provider batch API runs its calls (extract --mode batch-api, bench's batch_api)
    virtual_time: bool = False  # calls are pure asyncio: a run can go on a virtual clock
    emulated: bool = False  # answers are emulated (labelled so in every output)
    long_prompts_cost_more: bool = False  # attention over long prompts shows in latency (a CPU)
    time_scale: float = 1.0  # its clock runs this much faster (a scaled emulated profile): so do the client's waits

    def __post_init__(self) -> None:
        if not self.layouts or set(self.layouts) - set(LAYOUTS):
            raise ValueError(f"layouts must be some of {LAYOUTS}, got {self.layouts!r}")

    def layout(self, asked: str) -> str:
        """``packed`` or ``parallel`` for ``asked`` (``auto``: this backend's default)."""
        if asked == "auto":
            return self.layouts[0]
        if asked not in LAYOUTS:
            raise ValueError(f"unknown layout {asked!r}; layouts: auto, {', '.join(LAYOUTS)}")
        if asked not in self.layouts:  # e.g. parallel elsewhere would be one call per document: --max-docs 1
            raise ValueError(f"the {asked} layout needs a backend that decodes prompts together (the local "
                             "model); elsewhere use --layout packed, or --max-docs 1 for one document per call")
        return asked

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class ResolvedLM:
    """A ``dspy.LM`` plus what the toolkit needs to know about it."""

    spec: str  # as the user gave it
    lm: Any  # dspy.LM
    model_id: str  # model name (and weights hash for local models)
    capabilities: Capabilities
    engine: Any = None  # the toolkit engine behind it, if any
    priced_as: str | None = None  # the model whose prices it is billed at (toolkit.core._pricing); None: unpriced
    rates: RateFeed = field(default_factory=RateFeed)  # what each reply said about the account's limits

    @property
    def emulated(self) -> bool:
        return self.capabilities.emulated
