"""The tests every sink must pass, run on each of them (postgres, duckdb, bigquery against its emulators):
the same rows, the same ids as PostgreSQL for the same file, re-runs that insert nothing, repeats kept with
ids of their own, bad input that leaves the tables as they were, backfill and status."""

from __future__ import annotations

import gzip
import json

import pytest

from taxi_loader.months import Month

from conftest import DATA, data_rows, twin_ids, wrong_checksum

JULY, DECEMBER = Month(2020, 7), Month(2020, 12)
SAMPLES = [
    ("green", Month(2019, 1), "green_tripdata_2019-01.head99.csv"),
    ("yellow", DECEMBER, "yellow_tripdata_2020-12.head1295.csv"),
]


def out(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def postgres_ids(cli, db, taxi: str, month: Month) -> set[str]:
    """The ids PostgreSQL gives the same file (loaded into the test's own schema unless the sink under test
    already did)."""
    if f"{taxi}_tripdata" not in db.tables():
        assert cli("load", "--taxi", taxi, "--month", str(month)).exit_code == 0
    return {r[0] for r in db.all(f"SELECT unique_row_id FROM {taxi}_tripdata")}


@pytest.mark.parametrize(("taxi", "month", "sample"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_a_month_loads_once_with_the_ids_postgresql_gives(sink, cli, db, mirror, taxi, month, sample):
    mirror.put_sample(taxi, month, sample)
    rows = data_rows(DATA / sample)
    first = sink.run("load", "--taxi", taxi, "--month", str(month))
    assert first.exit_code == 0, first.output
    assert (out(first)["rows_read"], out(first)["rows_inserted"]) == (rows, rows)
    again = sink.run("load", "--taxi", taxi, "--month", str(month))
    assert again.exit_code == 0, again.output
    assert (out(again)["rows_inserted"], out(again)["rows_present"]) == (0, rows)
    ids = sink.ids(taxi)
    assert len(ids) == len(set(ids)) == rows
    assert set(ids) == set(twin_ids((DATA / sample).read_text(), taxi))
    assert set(ids) == postgres_ids(cli, db, taxi, month)
    assert not any("staging" in t for t in sink.tables())


def test_exact_repeats_are_kept_with_ids_of_their_own(sink, cli, db, mirror):
    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines(keepends=True)
    text = "".join(lines[:50] + [lines[7]] * 2 + lines[50:])  # line 7 three times in all
    mirror.put_csv("yellow", JULY, text)
    result = sink.run("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert (out(result)["rows_inserted"], out(result)["rows_repeated"]) == (268, 2)
    ids = sink.ids("yellow")
    assert len(ids) == len(set(ids)) == 268
    assert set(ids) == set(twin_ids(text, "yellow"))
    assert set(ids) == postgres_ids(cli, db, "yellow", JULY)


@pytest.mark.parametrize(
    ("column", "value"), [(13, "NaN"), (4, "-inf"), (13, "1e400"), (10, "Infinity")], ids=["tip", "dist", "big", "fare"]
)
def test_numbers_that_are_not_finite_are_rejects_on_every_sink(sink, mirror, column, value):
    """`NaN` and infinities read by Arrow (DuckDB, BigQuery, PostgreSQL's key fields) or COPY (PostgreSQL's other
    columns) were loaded, and `1e400` became inf on DuckDB and BigQuery, where the validating pass and the
    Parquet reader refuse them."""
    lines = _july_with({(5, column): value})
    mirror.put_csv("yellow", JULY, "\n".join(lines) + "\n")
    result = sink.run("load", "--taxi", "yellow", "--month", "2020-07", "--max-rejects", "5")
    assert result.exit_code == 0, result.output
    assert (out(result)["rows_inserted"], out(result)["rows_rejected"]) == (265, 1)
    kept = "".join(x + "\n" for i, x in enumerate(lines) if i != 5)
    assert set(sink.ids("yellow")) == set(twin_ids(kept, "yellow"))


def test_a_number_too_small_for_double_precision_is_zero_on_every_sink(sink, mirror):
    """1e-400 in a key field: Arrow reads 0; PostgreSQL's COPY refuses the text, and its validating pass let it
    through to a COPY that failed again (exit 1). Now it is 0 there too, with the same id."""
    mirror.put_csv("yellow", JULY, "\n".join(_july_with({(5, 10): "1e-400"})) + "\n")  # fare_amount
    result = sink.run("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 0, result.output
    assert (out(result)["rows_inserted"], out(result)["rows_rejected"]) == (266, 0)
    assert set(sink.ids("yellow")) == set(twin_ids("\n".join(_july_with({(5, 10): "0"})) + "\n", "yellow"))


def _july_with(values: dict[tuple[int, int], str]) -> list[str]:
    """The July sample's lines (the header is line 0) with the field at each (line, column) replaced."""
    lines = (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_text().splitlines()
    for (line, column), value in values.items():
        fields = lines[line].split(",")
        fields[column] = value
        lines[line] = ",".join(fields)
    return lines


def _with_bad_fares(n: int) -> bytes:
    """The July sample with `n` fares that are not numbers."""
    return ("\n".join(_july_with({(i, 10): "ten" for i in range(1, n + 1)})) + "\n").encode()


BAD_FILES = {
    "another taxi's header": (
        lambda: gzip.compress((DATA / "green_tripdata_2019-01.head99.csv").read_bytes()),
        "looks like a green file",
    ),
    "an HTML page": (lambda: b"<!DOCTYPE html><html><body>Rate limited</body></html>\n", "not a gzipped file"),
    "a truncated gzip": (
        lambda: gzip.compress((DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_bytes())[:3000],
        "corrupt or truncated",
    ),
    "a gzip with a wrong checksum": (
        lambda: wrong_checksum(gzip.compress((DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_bytes())),
        "corrupt or truncated",
    ),
    "too many bad values": (lambda: gzip.compress(_with_bad_fares(10)), "more than --max-rejects 0.1% allows"),
    "a header and no rows": (
        lambda: gzip.compress(
            (DATA / "yellow_tripdata_2020-07.head266.rides.csv").read_bytes().split(b"\n")[0] + b"\n"
        ),
        "no rows after its header",
    ),
    "a Parquet file with no rows": (lambda: _parquet_without_rows(), "no rows after its header"),
}


def _parquet_without_rows() -> bytes:
    import io

    import pyarrow.parquet as pq

    from taxi_loader.synthetic_tlc import generated_table

    buf = io.BytesIO()
    pq.write_table(generated_table("yellow", 2020, 7, 10).slice(0, 0), buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_exit_5_and_leaves_the_tables_as_they_were(sink, mirror, case):
    mirror.put_sample("yellow", DECEMBER, "yellow_tripdata_2020-12.head1295.csv")
    assert sink.run("load", "--taxi", "yellow", "--month", "2020-12").exit_code == 0
    data, message = BAD_FILES[case]
    mirror.put_bytes("yellow", JULY, data())
    result = sink.run("load", "--taxi", "yellow", "--month", "2020-07")
    assert result.exit_code == 5, result.output
    assert message in result.stderr
    assert len(sink.ids("yellow")) == 1295
    assert not any("staging" in t for t in sink.tables())


def test_backfill_skips_what_is_loaded_and_status_shows_it(sink, mirror):
    for m in (Month(2021, 1), Month(2021, 2)):
        mirror.put_generated("green", m, 1_500)
    # Two months at once, but on the BigQuery emulator: it cannot commit two table creations at once (BigQuery
    # itself can), and this test is about the loader, not the emulator.
    jobs = "1" if sink.name == "bigquery" else "2"
    args = ("backfill", "--taxi", "green", "--from", "2021-01", "--to", "2021-03", "--jobs", jobs)
    first = sink.run(*args)
    assert first.exit_code == 0, first.output
    months = [json.loads(x) for x in first.stdout.splitlines() if "backfill-month" in x]
    assert sorted((m["month"], m["status"]) for m in months) == [
        ("2021-01", "loaded"),
        ("2021-02", "loaded"),
        ("2021-03", "not published"),
    ]
    assert out(first)["loaded"] == 2 and out(first)["not_published"] == 1
    again = sink.run(*args)
    assert out(again)["skipped"] == 2 and out(again)["loaded"] == 0
    assert len(sink.ids("green")) == 3_000
    report = json.loads(sink.run("status", "--format", "json").stdout)
    assert report["totals"] == {"green": {"2021": 3_000}} and report["gaps"] == {"green": []}
    assert [(m["month"], m["status"], m["rows"]) for m in report["months"]] == [
        ("2021-01", "succeeded", 1_500),
        ("2021-02", "succeeded", 1_500),
    ]
