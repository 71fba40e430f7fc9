"""The live run display: done/total, in flight, retries, tokens, dollars, accept rate, rate, ETA."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from curator.sample.sampler import Stats


class RunProgress:
    def __init__(self, stats: Stats, enabled: bool = True):
        self.stats = stats
        self.enabled = enabled and sys.stderr.isatty() or enabled == "force"
        self._last = 0.0
        self.warnings: list[str] = []
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]sampling"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self.task = None

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self.progress.__enter__()
            s = self.stats
            self.task = self.progress.add_task("sampling", total=s.total_samples, completed=s.already_stored, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.refresh(force=True)
            self.progress.__exit__(*exc)

    def line(self) -> str:
        s = self.stats
        elapsed = max(1e-9, time.monotonic() - s.started)
        cost = f"${s.cost_usd:,.4f}" if s.cost_known else "$ unknown"
        acc = f"{s.accepted / s.judged:.0%} accepted" if s.judged else "-"
        return (
            f"in flight {s.in_flight} | retries {s.retries} | failed {s.failed} | "
            f"tok {s.prompt_tokens + s.completion_tokens:,} | {cost} | {acc} | {s.stored / elapsed:,.1f} samples/s"
        )

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.enabled:
            self.progress.console.print(f"[yellow]warning:[/] {message}")

    def note(self, message: str) -> None:
        """A state change to show (batch mode: submitted, in progress, finalizing, downloading)."""
        if self.enabled:
            self.progress.console.print(message, highlight=False, markup=False)
            self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        s = self.stats
        self.progress.update(self.task, completed=s.already_stored + s.stored, info=self.line())
