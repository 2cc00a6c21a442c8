"""Helpers shared by the benchmarks: time budgets, medians and ratios.

Benchmarks are scripts, not tests: each prints its medians and the ratio
against its peer measured in the same run. Absolute figures on a shared
machine move with its load; only the ratio of two sides measured side by
side, round after round, means something.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def cpu_seconds(*pids: int) -> float:
    """User plus system CPU time of the processes (their threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def use_repository_imports() -> None:
    """Makes `tests.*` harnesses importable from a benchmark script."""
    root = str(REPOSITORY)
    if root not in sys.path:
        sys.path.insert(0, root)


class BudgetExceeded(RuntimeError):
    """The benchmark ran out of its time budget."""


@dataclass
class Budget:
    """A wall-clock budget for a whole benchmark run."""

    seconds: float
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def check(self, what: str) -> None:
        """Raises BudgetExceeded when nothing is left for WHAT."""
        if self.remaining() <= 0:
            raise BudgetExceeded(f"time budget of {self.seconds:g} s spent: {what}")


@dataclass(frozen=True)
class Series:
    """The samples of one measurement, e.g. setups/s of each round."""

    label: str
    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        if not self.samples:
            return float("nan")
        return statistics.median(self.samples)

    def describe(self) -> str:
        if not self.samples:
            return f"{self.label}: no samples"
        low, high = min(self.samples), max(self.samples)
        return (
            f"{self.label}: median {self.median:.1f} {self.unit} "
            f"(min {low:.1f}, max {high:.1f}, n={len(self.samples)})"
        )


def ratio(numerator: Series, denominator: Series) -> float:
    """The ratio of the two medians; NaN when either is missing or zero."""
    if not numerator.samples or not denominator.samples or not denominator.median:
        return float("nan")
    return numerator.median / denominator.median


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """Prints a left-aligned plain-text table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
