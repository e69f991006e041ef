"""Faults the emulator can inject: queued one-shot ones and random ones at a given rate."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

ENDPOINTS = frozenset({"token", "revocation", "connections", "organisation", "authorize"})
ANY = "*"
KINDS = frozenset(
    {"status", "rate_limit", "delay", "drop_after", "reset", "answer", "endless", "trickle"}
)


@dataclass(frozen=True)
class Fault:
    """What to do to one request.

    `reset` closes the socket without processing, `status` and `rate_limit` answer instead of
    processing, `delay` sleeps and then processes, `drop_after` processes and then closes the
    socket without answering (so a refresh really rotated before the client saw nothing).
    A hostile server: `answer` sends `body` (JSON, with `status` or 200) instead of processing,
    `endless` answers 200 with a body that does not end (until the client hangs up, or 64 MB),
    and `trickle` processes and then sends its whole answer one byte every `delay` seconds.
    """

    kind: str
    status: int | None = None
    delay: float = 0.0
    retry_after: int | None = None
    body: bytes = field(default=b"", repr=False)

    @classmethod
    def make(
        cls,
        endpoint: str,
        kind: str,
        *,
        status: int | None = None,
        delay: float = 0.0,
        retry_after: int | None = None,
        body: bytes | str | None = None,
    ) -> Fault:
        check_target(endpoint, kind)
        if kind == "status" and (status is None or not 400 <= status <= 599):
            raise ValueError("a 'status' fault needs status between 400 and 599")
        if kind == "answer" and status is not None and not 200 <= status <= 599:
            raise ValueError("an 'answer' fault needs status between 200 and 599")
        if delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("delay and retry_after cannot be negative")
        if kind == "trickle" and delay <= 0:
            raise ValueError("a 'trickle' fault needs a delay between bytes")
        data = body.encode() if isinstance(body, str) else (body or b"")
        return cls(kind, status, float(delay), retry_after, data)


def check_target(endpoint: str, kind: str) -> None:
    if endpoint != ANY and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {sorted(ENDPOINTS)} or '*'")
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(KINDS)}")


@dataclass
class _Rate:
    rate: float
    fault: Fault
    rng: random.Random


class FaultPlan:
    """Faults per endpoint; not locked itself, the emulator's state lock guards it."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[Fault]] = {}
        self._rates: dict[str, dict[str, _Rate]] = {}

    def inject(self, endpoint: str, fault: Fault, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self._queued.setdefault(endpoint, deque()).extend([fault] * count)

    def set_rate(self, endpoint: str, fault: Fault, rate: float, seed: int | None) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        self._rates.setdefault(endpoint, {})[fault.kind] = _Rate(rate, fault, random.Random(seed))

    def clear_rate(self, endpoint: str, kind: str) -> None:
        check_target(endpoint, kind)
        self._rates.get(endpoint, {}).pop(kind, None)

    def take(self, endpoint: str) -> Fault | None:
        """The fault for the next request to `endpoint`: queued ones first (FIFO), then random."""
        for key in (endpoint, ANY):
            queue = self._queued.get(key)
            if queue:
                return queue.popleft()
        for key in (endpoint, ANY):
            for entry in self._rates.get(key, {}).values():
                if entry.rng.random() < entry.rate:
                    return entry.fault
        return None
