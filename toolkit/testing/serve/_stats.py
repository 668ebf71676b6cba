"""What the server did, call by call: a log of every chat call (when it was admitted or refused,
what it was charged, how it was answered) and the figures derived from it, so a test or a bench
can count the 429s the server sent and check every sliding window of admitted calls."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from toolkit.execution import max_in_window
from toolkit.testing.serve._window import DIMENSIONS, Limits


@dataclass(frozen=True)
class Entry:
    """One call: ``at`` the wall-clock time it was admitted or refused; ``admitted`` whether the
    window charged it ``input`` + ``output`` tokens (prompt tokens as the cache rules count them,
    plus the output cap); ``status`` the HTTP status answered (0: the connection was dropped);
    ``fault`` the injected fault, if any; ``body`` the request as sent (kept only when the server
    is asked to: :attr:`~toolkit.testing.serve.ServeSettings.keep_bodies`)."""

    at: float
    route: str
    status: int
    admitted: bool
    input: int
    output: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int = 0
    fault: str | None = None
    request_id: str = ""
    body: dict[str, Any] | None = None


class Stats:
    """The log of calls since the server started or was last reset."""

    def __init__(self) -> None:
        self.log: list[Entry] = []

    def record(self, entry: Entry) -> None:
        self.log.append(entry)

    def reset(self) -> None:
        self.log = []

    def summary(self, limits: Limits) -> dict[str, Any]:
        """``calls``; ``answered`` (200 with no fault); ``rate_limited`` (429s of the server's own
        windows); ``faults`` by kind; ``statuses``; ``peak``: the most any sliding window of
        ``limits.window`` seconds admitted, per limit; ``within_limits``; and the ``log``."""
        admitted = [e for e in self.log if e.admitted]
        times = [e.at for e in admitted]
        charges = {"requests": [1] * len(admitted), "tokens": [e.input + e.output for e in admitted],
                   "input-tokens": [e.input for e in admitted], "output-tokens": [e.output for e in admitted]}
        peak = {d: max_in_window(times, charges[d], limits.window) for d in DIMENSIONS}
        bounds = limits.by_dimension()
        return {"calls": len(self.log),
                "answered": sum(e.status == 200 and e.fault is None for e in self.log),
                "rate_limited": sum(e.status == 429 and not e.admitted for e in self.log),
                "faults": dict(Counter(e.fault for e in self.log if e.fault)),
                "statuses": {str(k): v for k, v in sorted(Counter(e.status for e in self.log).items())},
                "limits": asdict(limits), "peak": peak,
                "within_limits": all((bound := bounds[d]) is None or peak[d] <= bound for d in DIMENSIONS),
                "log": [asdict(e) for e in self.log]}
