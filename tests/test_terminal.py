"""The live display, in a real pseudo-terminal read back through a terminal emulator (pyte): log lines print
above the progress lines, never through them; NO_COLOR and a pipe get no colour; the step column's text."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pyte
import pytest
from rich.progress import Progress

from taxi_loader.console import Screen, _StepColumn
from taxi_loader.months import Month

from conftest import DATA

TIMESTAMP = "Z ["  # a console log line: 2026-12-01T10:00:00.000000Z [info     ] ...


def run_in_terminal(argv: list[str], columns: int, env: dict | None = None, timeout: float = 120) -> list[list[str]]:
    """Run taxi-loader in a pseudo-terminal of `columns` x 40; return every screen it showed (as lines)."""
    screen = pyte.Screen(columns, 40)
    stream = pyte.ByteStream(screen)
    parent, child = pty.openpty()
    os.set_blocking(parent, False)
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environment.update({"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40", **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "taxi_loader", *argv], stdin=child, stdout=child, stderr=child, env=environment
    )
    os.close(child)
    shown, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.05)
        if ready:
            try:
                data = os.read(parent, 1 << 16)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
            shown.append(list(screen.display))
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(parent)
    assert proc.returncode == 0, "\n".join(shown[-1] if shown else [])
    return shown


def month_of(text: str) -> Month:
    return Month.parse(text)


@pytest.mark.parametrize("columns", [80, 140])
def test_log_lines_never_run_through_the_progress_display(db, mirror, tmp_path, columns):
    for month in ("2021-01", "2021-02", "2021-03"):
        mirror.put_generated("yellow", month_of(month), 60_000)
    argv = ["backfill", "--taxi", "yellow", "--from", "2021-01", "--to", "2021-03", "--jobs", "2"]
    argv += ["--db-url", db.url, "--schema", db.schema, *mirror.args(), "--data-dir", str(tmp_path / "d")]
    screens = run_in_terminal(argv, columns)
    drawn = [s for s in screens if any("backfill" in line and "months" in line for line in s)]
    assert drawn, "the display was never drawn"
    for s in screens:
        for line in s:
            # a line is a log line or a progress line, never both
            assert not (TIMESTAMP in line and ("━" in line or " months" in line and "/" in line)), line
    last = "\n".join(screens[-1])
    assert "3 loaded" in last and "━" not in last  # the display is gone, the table stays


def test_no_color_and_pipes_get_plain_text(db, mirror, tmp_path):
    mirror.put_csv("yellow", month_of("2020-07"), (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text())
    argv = ["load", "--taxi", "yellow", "--month", "2020-07", "--db-url", db.url, "--schema", db.schema]
    argv += [*mirror.args(), "--data-dir", str(tmp_path / "d")]
    parent, child = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "taxi_loader", "--log-format", "console", *argv],
        stdin=child,
        stdout=subprocess.PIPE,
        stderr=child,
        env={**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color"},
        timeout=120,
    )
    os.close(child)
    os.set_blocking(parent, False)
    try:
        terminal = os.read(parent, 1 << 20)
    except BlockingIOError:
        terminal = b""
    os.close(parent)
    assert proc.returncode == 0
    assert b"merging" in terminal  # the display was drawn...
    assert not re.search(rb"\x1b\[(?:\d+;)*(?:3|4|9|10)\d", terminal)  # ...without a colour (bold is no colour)
    assert b"\x1b" not in proc.stdout and proc.stdout.startswith(b"load yellow 2020-07: staged=266")  # a pipe


def test_the_step_column_says_what_each_step_has_done():
    clock = [0.0]
    progress = Progress(get_time=lambda: clock[0])
    column = _StepColumn()
    download = progress.add_task("d", total=20_000_000, unit="bytes")
    rows = progress.add_task("s", total=None, unit="rows")
    merge = progress.add_task("m", total=None, unit="")
    for t in range(1, 5):
        clock[0] = float(t)
        progress.update(download, completed=t * 2_000_000)
        progress.update(rows, completed=t * 150_000)
    tasks = {t.id: t for t in progress.tasks}
    assert column.render(tasks[download]).plain == "8.0/20.0 MB  2.0 MB/s  ETA 0:06"
    assert column.render(tasks[rows]).plain == "600,000 rows  150k rows/s"
    assert column.render(tasks[merge]).plain == "0:04"


def test_a_month_line_follows_its_steps_and_goes_when_done():
    from rich.console import Console

    screen = Screen(Console(force_terminal=False, width=80, file=open(os.devnull, "w")))  # noqa: SIM115
    with screen.month("yellow 2021-01") as line:
        line.step("downloading", 1000, "bytes")
        line.update(500)
        (task,) = screen.progress.tasks
        assert (task.description, task.total, task.completed) == ("[bold]yellow 2021-01[/] downloading", 1000, 500)
        line.step("staging", None, "rows")
        (task,) = screen.progress.tasks
        assert (task.description, task.total, task.completed, task.fields["unit"]) == (
            "[bold]yellow 2021-01[/] staging",
            None,
            0,
            "rows",
        )
    assert screen.progress.tasks == []
