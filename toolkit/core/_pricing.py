"""What tokens cost: a model's prices per token and the cost in USD of the tokens a run used.

Prices come from LiteLLM's bundled price map (``model_prices_and_context_window_backup.json``,
read as a file: offline, and without importing LiteLLM) or from a price file of the same shape
(``{"MODEL": {"input_cost_per_token": ..., ...}}``, or one such entry alone). A model without a
price (the local model) has no :class:`Prices`: its cost is ``None``, never 0. A price file is
checked when it is read (a JSON object; every price a finite, non-negative number), so a bad one
is refused before a run's first call, in one line.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PRICE_MAP = "model_prices_and_context_window_backup.json"
PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
              "input_cost_per_token_batches", "output_cost_per_token_batches")  # USD per token, by Prices field
ENTRY = '{"input_cost_per_token": USD, "output_cost_per_token": USD, ...}'


@dataclass(frozen=True)
class Prices:
    """USD per token. ``cached_input``: a prompt-cache read (None: billed as input);
    ``batch_*``: through the provider's batch API (None: the model has no batch price)."""

    model: str
    input: float
    output: float
    cached_input: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None
    source: str = ""

    @property
    def batch_priced(self) -> bool:
        """Whether the model has batch-API prices."""
        return self.batch_input is not None and self.batch_output is not None

    def cost(self, tokens_in: int, tokens_out: int, cached: int = 0, batch: bool = False) -> float:
        """USD for ``tokens_in`` prompt tokens (``cached`` of them read from the prompt cache: a
        provider's report of more than ``tokens_in``, or fewer than 0, is taken as all, or none) and
        ``tokens_out`` output tokens; ``batch``: at batch-API prices (cache reads at the lower of
        the two input prices; see :attr:`batch_priced`)."""
        cached = min(max(cached, 0), tokens_in)
        if batch:
            if self.batch_input is None or self.batch_output is None:
                raise ValueError(f"{self.model}: no batch-API prices ({self.source})")
            cached_price = self.cached_input if self.cached_input is not None else self.batch_input
            cache_price = min(self.batch_input, cached_price)
            return (tokens_in - cached) * self.batch_input + cached * cache_price + tokens_out * self.batch_output
        cache_price = self.cached_input if self.cached_input is not None else self.input
        return (tokens_in - cached) * self.input + cached * cache_price + tokens_out * self.output

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def _from_entry(model: str, entry: object, source: str) -> Prices | None:
    """``entry``'s prices (checked: see :func:`check_entry`); None without an input and an output price."""
    if not isinstance(entry, dict):
        return None
    input_price, output_price, cached, batch_input, batch_output = check_entry(entry, f"{source}: {model!r}")
    if input_price is None or output_price is None:
        return None
    return Prices(model, input_price, output_price, cached, batch_input, batch_output, source=source)


def check_entry(entry: dict[str, Any], where: str) -> list[float | None]:
    """``entry``'s prices in :data:`PRICE_KEYS` order (None: no such price); a price that is not a
    finite, non-negative number is refused."""
    out: list[float | None] = []
    for key in PRICE_KEYS:
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            raise ValueError(f"{where}: {key} must be a number of USD per token, not {_shown(value)}")
        try:
            price = None if value is None else float(value)
        except OverflowError:
            price = math.inf
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ValueError(f"{where}: {key} must be a finite number of USD per token, 0 or more, "
                             f"not {_cut(str(value))}")
        out.append(price)
    return out


def _shown(value: object) -> str:
    """A JSON value as a user wrote it, named by its JSON type."""
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a value")
    return f"{kind} ({_cut(json.dumps(value))})"


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _is_entry(data: dict[str, Any]) -> bool:
    """Whether a price file holds one entry (prices at its top level), not a map by model."""
    return any(key in data for key in PRICE_KEYS)


def _read_price_file(path: Path) -> dict[str, Any]:
    """A price file's JSON object, every entry checked (one entry, or a map of entries by model)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"price file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"price file {path}: expected {ENTRY} or a map of such by model name, not {_shown(data)}")
    if _is_entry(data):
        check_entry(data, f"price file {path}")
        return data
    for model, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"price file {path}: {model!r} must map to {ENTRY}, not {_shown(entry)}")
        check_entry(entry, f"price file {path}: {model!r}")
    return data


@lru_cache(maxsize=1)
def litellm_price_map() -> tuple[dict[str, Any], str]:
    """LiteLLM's bundled price map and its path (empty when LiteLLM is not installed)."""
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}, ""
    path = Path(list(spec.submodule_search_locations)[0]) / PRICE_MAP
    if not path.exists():
        return {}, ""
    return json.loads(path.read_text(encoding="utf-8")), str(path)


def _lookup(table: dict[str, Any], model: str, source: str) -> Prices | None:
    """``model`` in ``table``: as given, then without its provider prefix (``openai/gpt-4o-mini``)."""
    for key in dict.fromkeys((model, model.split("/", 1)[-1])):
        prices = _from_entry(key, table.get(key), source)
        if prices is not None:
            return prices
    return None


def prices_for(model: str | None, price_file: str | Path | None = None) -> Prices | None:
    """The prices of ``model`` from ``price_file`` when given (a map by model, or one entry), else
    from LiteLLM's map; None when ``model`` is None or has no price there."""
    if price_file is not None:
        path = Path(price_file)
        data = _read_price_file(path)
        if _is_entry(data):
            single = _from_entry(model or path.stem, data, str(path))
            if single is None:
                raise ValueError(f"price file {path}: needs both input_cost_per_token and output_cost_per_token")
            return single
        if model is None:
            raise ValueError(f"price file {path}: a map by model needs a model name")
        prices = _lookup(data, model, str(path))
        if prices is None:
            raise ValueError(f"price file {path} has no input and output price for {model!r}")
        return prices
    if model is None:
        return None
    table, source = litellm_price_map()
    return _lookup(table, model, f"LiteLLM price map ({Path(source).name})") if table else None


def resolve_prices(priced_as: str | None, override: str | None = None) -> Prices | None:
    """A run's prices: ``override`` (``--price``: a model name of the price map or a price file)
    if given, else ``priced_as`` (what the backend says it is billed as; None: unpriced). A name
    the map does not know is an error, not a silent ``None``."""
    if override:
        if Path(override).suffix == ".json" or Path(override).exists():
            return prices_for(priced_as, override)
        prices = prices_for(override)
        if prices is None:
            raise ValueError(f"no price for {override!r} in LiteLLM's price map; give a price file (--price FILE.json)")
        return prices
    return prices_for(priced_as)
