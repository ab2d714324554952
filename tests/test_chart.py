"""The status picture (taxi_loader/chart.py): the terminal chart against golden text, and the PNG.

Pure: the report is built by `backfill.summarize` from ledger records made here, no database. When the chart
changes on purpose: `UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_chart.py`, then review the diff of
tests/golden/status_chart.txt.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from taxi_loader.backfill import summarize
from taxi_loader.chart import plot_status, status_chart
from taxi_loader.contract import FAILED, SUCCEEDED, LoadRecord
from taxi_loader.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden"

# The TLC's yellow trips per month: 2019, then 2020 with the spring collapse (April: 238k).
YELLOW_2019 = [
    7667792,
    7019375,
    7832545,
    7433139,
    7565261,
    6941024,
    6310419,
    6073357,
    6567788,
    7213891,
    6878111,
    6896317,
]
YELLOW_2020 = [6405008, 6299354, 3007292, 237993, 348371, 549760, 800412, 1007284, 1341012, 1681131, 1508985, 1461897]
GREEN_2020 = [447770, 398632, 223496, 35612, 57360, 63109]


def _record(taxi: str, month: str, rows: int | None, status: str = SUCCEEDED, ext: str = "csv.gz") -> LoadRecord:
    return LoadRecord(
        taxi=taxi,
        month=month,
        status=status,
        rows=rows if status == SUCCEEDED else None,
        source_size=1,
        source_sha256=None,
        finished_at="2026-01-02T03:04:05+00:00",
        source=f"https://example.org/{taxi}_tripdata_{month}.{ext}",
    )


def _report() -> dict[str, Any]:
    """yellow 2019-01..2020-12 with 2020-05 never loaded and 2020-09 failed; green 2020-01..06, two from Parquet."""
    records = []
    for year, counts in (("2019", YELLOW_2019), ("2020", YELLOW_2020)):
        for i, rows in enumerate(counts, 1):
            month = f"{year}-{i:02d}"
            if month == "2020-05":
                continue
            records.append(_record("yellow", month, rows, FAILED if month == "2020-09" else SUCCEEDED))
    for i, rows in enumerate(GREEN_2020, 1):
        records.append(_record("green", f"2020-{i:02d}", rows, ext="parquet" if i >= 5 else "csv.gz"))
    return {**summarize(records), "zones": 265}


def _text(report: dict[str, Any]) -> str:
    console = Console(record=True, width=80, color_system=None, force_terminal=False, file=io.StringIO())
    console.print(status_chart(report))
    return console.export_text()


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"the chart changed: diff it with {path} (UPDATE_GOLDEN=1)"


def test_status_chart_matches_golden():
    _check_golden("status_chart.txt", _text(_report()))


def test_status_chart_shows_the_collapse_gap_and_failure():
    """What the golden text is for, asserted directly so that a wrong golden file cannot hide it."""
    lines = _text(_report()).splitlines()
    y2019 = next(line for line in lines if line.startswith("2019"))
    y2020 = [line for line in lines if line.startswith("2020")][0]  # yellow's: yellow is listed first
    assert y2019.split()[1:13] == ["█", "▇", "█", "█", "█", "▇", "▆", "▆", "▇", "▇", "▇", "▇"]
    cells_2020 = y2020[8:31:2]
    assert cells_2020[3] == "▁"  # April 2020: 3% of the top month, still visible
    assert cells_2020[4] == "·"  # May: inside the span, never loaded
    assert cells_2020[8] == "✗"  # September: failed
    assert "84,399,019 rows  12 months" in y2019
    assert "gaps: 2020-05, 2020-09" in lines[lines.index(y2020) + 1]
    assert "4 months from CSV, 2 from Parquet" in "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)


def test_status_chart_colours_failures_red():
    console = Console(record=True, width=80, color_system="standard", force_terminal=True, file=io.StringIO())
    console.print(status_chart(_report()))
    text = console.export_text(styles=True)
    assert "\x1b[1;31m✗\x1b[0m" in text  # bold red
    assert "\x1b[" not in _text(_report())  # and no escape at all without colour


def test_gaps_are_compacted_into_ranges():
    records = [_record("green", m, 100) for m in ("2020-01", "2020-02", "2020-06", "2020-08")]
    text = _text({**summarize(records), "zones": None})
    assert "gaps: 2020-03..2020-05, 2020-07" in text
    assert "from Parquet" not in text  # all CSV: no formats line
    assert text.rstrip().endswith("zones: not loaded (taxi-loader zones)")


def test_empty_report():
    assert _text({"months": [], "gaps": {}, "totals": {}, "zones": None}) == (
        "nothing loaded yet\nzones: not loaded (taxi-loader zones)\n"
    )
    assert _text({**summarize([]), "zones": 265}) == "nothing loaded yet\nzones: 265 in taxi_zone_lookup\n"


def test_plot_status_writes_a_png(tmp_path):
    path = tmp_path / "status.png"
    assert plot_status(_report(), path) == path
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_status_into_a_missing_directory(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(ConfigError, match=str(missing)):
        plot_status(_report(), missing / "status.png")
    assert not missing.exists()


def test_plot_status_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'taxi-loader\[plot\]'"):
        plot_status(_report(), tmp_path / "status.png")
    assert not (tmp_path / "status.png").exists()
