"""What the stress suite measured, and every secret and output it saw, for the closing scan.

One process runs the whole session (no xdist), so module-level lists are the registry: the
tests append, `conftest.pytest_terminal_summary` prints the figures and the leak scan reads the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    scenario: str
    tried: str
    times: int
    lost: int
    seconds: float


@dataclass
class Seen:
    """Secret values in play, the outputs that must not carry them, and the dirs the app wrote."""

    secrets: set[str] = field(default_factory=set)
    # (label, text): stdout/stderr of commands and the text of errors raised in-process.
    outputs: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)


FIGURES: list[Figure] = []
SEEN = Seen()


def record(scenario: str, tried: str, times: int, lost: int, seconds: float) -> Figure:
    """Add a table row; call it before asserting, so a failing scenario still shows its figures."""
    figure = Figure(scenario, tried, times, lost, seconds)
    FIGURES.append(figure)
    return figure


def output(label: str, text: str) -> None:
    if text:
        SEEN.outputs.append((label, text))


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.end: float | None = None

    @property
    def seconds(self) -> float:
        return (self.end if self.end is not None else time.monotonic()) - self.start


@contextmanager
def timed() -> Iterator[Clock]:
    clock = Clock()
    try:
        yield clock
    finally:
        clock.end = time.monotonic()


def table(figures: list[Figure]) -> list[str]:
    header = ("scenario", "tried", "how many times", "lost/broken (must be 0)", "seconds")
    rows = [(f.scenario, f.tried, str(f.times), str(f.lost), f"{f.seconds:.1f}") for f in figures]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if index >= 2 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(header), rule, *(line(r) for r in rows)]
