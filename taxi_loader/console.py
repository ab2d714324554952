"""What a person at a terminal sees: a live progress display, and results as tables and a chart.

Only the CLI uses this module, and only when stderr is a terminal and the log format is `console`: off a
terminal (CI, Kestra, pipes) the line-per-step output of logs.py is all there is. Built on rich, whose live
display keeps log lines above itself (they are written to sys.stderr, which the display redirects while it
runs), follows the terminal's width and honours NO_COLOR.

- `Screen`: the live display; `Screen.month(label)` is a `progress.Meter` drawing one line per running month
  (the step, bytes with speed and ETA, rows with rows/s, the merge while it runs); `Screen.overall(n)` is the
  backfill's bar over its months.
- `load_table`, `backfill_tables`: the results, per month (rows read, inserted, present (already in the
  table), rejected, repeated, seconds, rows/s), failed months with their reason and the command that retries
  them, totals.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from taxi_loader.progress import Meter


def _number(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def _rate(n: float | None, unit: str) -> str:
    if not n:
        return ""
    if unit == "bytes":
        return f"{n / 1e6:,.1f} MB/s"
    return f"{n / 1e3:,.0f}k {unit}/s" if n >= 10_000 else f"{n:,.0f} {unit}/s"


class _StepColumn(ProgressColumn):
    """What the step has done, in its unit: bytes of a download (with speed and time left when the size is
    known), rows staged (with rows/s), months of a backfill; the elapsed time of a step that counts nothing."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = task.completed
        if unit == "bytes":
            size = f"{done / 1e6:,.1f}" + (f"/{task.total / 1e6:,.1f}" if task.total else "") + " MB"
            left = task.time_remaining
            eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}" if task.total and left is not None else ""
            return Text(f"{size}  {_rate(task.speed, unit)}{eta}".rstrip())
        if unit == "months":
            return Text(f"{done:,.0f}/{task.total:,.0f} months" if task.total else "")
        if unit:
            return Text(f"{done:,.0f} {unit}  {_rate(task.speed, unit)}".rstrip())
        elapsed = task.elapsed or 0.0
        return Text(f"{int(elapsed // 60)}:{int(elapsed % 60):02d}", style="progress.elapsed")


class _MonthLine(Meter):
    """One running month's line of the display."""

    def __init__(self, screen: Screen, label: str):
        self._screen, self._label = screen, label
        self._task: TaskID | None = None

    def step(self, name: str, total: int | None = None, unit: str = "") -> None:
        progress = self._screen.progress
        # A new task, not a reset one: a reset keeps the last step's size when this one has none, and its speed
        if self._task is not None:
            progress.remove_task(self._task)
        self._task = progress.add_task(f"[bold]{self._label}[/] {name}", total=total, unit=unit)

    def update(self, done: int) -> None:
        if self._task is not None:
            self._screen.progress.update(self._task, completed=done)

    def close(self) -> None:
        if self._task is not None:
            self._screen.progress.remove_task(self._task)
            self._task = None


class Screen:
    """The live display on stderr, for as long as the `with` block runs."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _StepColumn(),
            console=self.console,
            redirect_stdout=False,  # results on stdout may go to a file: only stderr (the logs) is redirected
            transient=True,  # the results that follow are the record; the bars are not
        )
        self._lock = threading.Lock()
        self._overall: TaskID | None = None

    def __enter__(self) -> Screen:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextmanager
    def month(self, label: str) -> Iterator[Meter]:
        """A line for the month `label` while the block runs."""
        line = _MonthLine(self, label)
        try:
            yield line
        finally:
            line.close()

    def overall(self, months: int) -> None:
        """The backfill's own bar, over `months`."""
        self._overall = self.progress.add_task("[bold]backfill[/]", total=months, unit="months")

    def month_done(self) -> None:
        """One more month of the backfill has ended."""
        with self._lock:
            if self._overall is not None:
                self.progress.advance(self._overall)


# ---------------------------------------------------------------- results


_COLUMNS = {"read": "read", "inserted": "inserted", "present": "present", "rejected": "rejects", "repeated": "repeats"}
_SHOWN = {"not published": "unpublished"}  # a status in one word: a table of months of millions fits 80 columns


def _counts_table(taxis: bool) -> Table:
    # One space between columns, the taxi only when there are several: a month of millions fits 80 columns.
    table = Table(box=None, pad_edge=False, collapse_padding=True, padding=(0, 1), header_style="bold")
    table.add_column("month", no_wrap=True)
    if taxis:
        table.add_column("taxi", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name in (*_COLUMNS.values(), "seconds", "rows/s"):
        table.add_column(name, justify="right", no_wrap=True)
    return table


def _row(month: dict[str, Any], taxis: bool) -> list[str | Text]:
    status = str(month.get("status") or "loaded")
    style = {"failed": "red", "interrupted": "yellow", "not run": "yellow", "skipped": "dim", "unchanged": "dim"}.get(
        status, ""
    )
    seconds = month.get("seconds")
    read = month.get("read")
    # a file recognised as loaded already was not read: no rate
    rate = _number(read / seconds) if read and seconds and status in ("loaded", "succeeded") else "-"
    return [
        str(month["month"]),
        *([str(month["taxi"])] if taxis else []),
        Text(_SHOWN.get(status, status), style=style),
        *(_number(month.get(k)) for k in _COLUMNS),
        "-" if seconds is None else f"{seconds:,.1f}",
        rate,
    ]


def load_table(result: dict[str, Any], seconds: float) -> Table:
    """A load's result as a one-month table."""
    table = _counts_table(taxis=True)
    month = {k.removeprefix("rows_"): v for k, v in result.items()}
    status = "unchanged" if result.get("unchanged") else "loaded"
    table.add_row(*_row({**month, "status": status, "seconds": seconds}, taxis=True))
    return table


def backfill_tables(outcomes: Sequence[dict[str, Any]], counts: dict[str, int], retry: str | None) -> RenderableType:
    """A backfill's results: a table of its months, each failed month's reason, the totals and the command
    that retries what is left."""
    taxis = len({o["taxi"] for o in outcomes}) > 1
    table = _counts_table(taxis)
    for o in outcomes:
        table.add_row(*_row(o, taxis))
    parts: list[RenderableType] = [table]
    failed = [o for o in outcomes if o["status"] in ("failed", "interrupted") and o.get("error")]
    for o in failed:
        parts.append(Text(f"{o['taxi']} {o['month']}: {o['error']}", style="red"))
    loaded = [o for o in outcomes if o["status"] == "loaded"]
    inserted = sum(o.get("inserted") or 0 for o in loaded)
    seconds = sum(o.get("seconds") or 0 for o in outcomes)
    months = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    parts.append(Text(f"{months}; {inserted:,} rows inserted in {seconds:,.1f} s of loading", style="bold"))
    if retry:
        parts.append(Text(f"retry: {retry}"))
    return Group(*parts)
