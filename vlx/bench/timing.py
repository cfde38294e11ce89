"""Shared timing and reporting of the `vlx bench` benchmarks.

`interleave` runs each contender once per round, in turn, after a few warm-up rounds, so machine noise
(other processes on a shared CPU) falls on both sides alike; a contender's time is the median of its
rounds. `report` prints one benchmark's table with `rich` (contender, median, spread, what the numbers
are per) and a final `ratio=` line; `BenchResult` holds what was measured, so that tests and
docs/BENCHMARKS.md read the same numbers the table shows. `BenchmarkError` stops a benchmark whose
two sides disagree (then the timing would compare different work).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.table import Table

from vlx.errors import VlxError


class BenchmarkError(VlxError):
    """A benchmark's contenders disagree (different outputs or losses): the timing would compare different work."""


@dataclass
class BenchResult:
    """The medians (seconds per round) of each contender, the ratio a benchmark reports, and its context."""

    name: str
    medians: dict[str, float]
    rounds: dict[str, list[float]]
    ratio: float
    ratio_label: str
    target: str
    unit: str = "s"
    per: str = "step"
    rows: list[tuple[str, str]] = field(default_factory=list)  # extra (name, value) lines of the table
    notes: list[str] = field(default_factory=list)


def bench_device(device: str | None) -> str:
    """`device` if given, else the GPU when there is one, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int | None) -> int:
    """Use `threads` intra-op threads (all contenders share the setting); returns the count in effect."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def interleave(contenders: Mapping[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of `repeats` rounds per contender, after `warmup` untimed rounds; contenders alternate
    within a round, and the order flips every round so neither always runs right after the other."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        for name in names if index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            rounds[name].append(time.perf_counter() - start)
    return rounds


def medians(rounds: Mapping[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(times) for name, times in rounds.items()}


def machine_line() -> str:
    """Where the numbers come from: CPU/GPU, threads, torch version."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return f"{device}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def report(result: BenchResult, console: Console | None = None) -> None:
    """Print the result's table, then `ratio=X.XXX (label; target ...)` as the last line."""
    console = console or Console(width=120)
    table = Table(title=f"vlx bench {result.name} — {machine_line()}")
    table.add_column("contender")
    table.add_column(f"median {result.unit}/{result.per}", justify="right")
    table.add_column(f"min–max {result.unit}/{result.per}", justify="right")
    table.add_column("rounds", justify="right")
    for name, median in result.medians.items():
        times = result.rounds[name]
        table.add_row(name, f"{median:.4f}", f"{min(times):.4f}–{max(times):.4f}", str(len(times)))
    console.print(table)
    for name, value in result.rows:
        console.print(f"{name}: {value}")
    for note in result.notes:
        console.print(note)
    print(f"ratio={result.ratio:.3f} ({result.ratio_label}; target {result.target})", flush=True)
