"""Unit tests: month selection, value validation, header matching, identity text forms (the last against
PostgreSQL), and the pure helpers behind the reject limit, backfill's plan, skips and report."""

from __future__ import annotations

import random

import psycopg2
import pyarrow as pa
import pytest

from taxi_loader.arrowids import float_texts
from taxi_loader.backfill import (
    FAILED,
    LOADED,
    NOT_RUN,
    SKIPPED,
    UNPUBLISHED,
    Outcome,
    _settle_unpublished,
    parse_pairs,
    retry_command,
    summarize,
)
from taxi_loader.contract import LoadRecord
from taxi_loader.errors import BadData, UsageError
from taxi_loader.identity import key_text, pg_float_text, pg_timestamp_text, row_id
from taxi_loader.job import Job
from taxi_loader.months import Month, month_range, parse_trigger_date, select_month
from taxi_loader.reader import DEFAULT_MAX_REJECTS, Reject, Rejects, check_rejects, match_header, parse_value
from taxi_loader.taxis import FHV, GREEN, YELLOW, Kind, get_taxi


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"month": "2021-01"}, Month(2021, 1)),
        ({"month": "1", "year": "2021"}, Month(2021, 1)),
        ({"month": "01", "year": 2021}, Month(2021, 1)),
        ({"trigger_date": "2021-02-01T09:00:00Z"}, Month(2021, 1)),
        ({"trigger_date": "2021-01-01"}, Month(2020, 12)),
        ({"trigger_date": "2021-03-01T10:00:00+00:00"}, Month(2021, 2)),
    ],
)
def test_month_selection(kw, expected):
    assert select_month(**kw) == expected


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"month": "2021-13"}, "the month must be 01..12"),
        ({"month": "2021-00"}, "the month must be 01..12"),
        ({"month": "13", "year": "2021"}, "the month must be 01..12"),
        ({"month": "2021/01"}, "use YYYY-MM"),
        ({"month": "01", "year": "21x"}, "invalid year"),
        ({"month": "1899-01"}, "invalid year 1899"),
        ({}, "no month selected"),
        ({"trigger_date": "yesterday"}, "invalid trigger date"),
        ({"trigger_date": "2021-02-01", "month": "2021-01"}, "not both"),
    ],
)
def test_month_selection_errors(kw, message):
    with pytest.raises(UsageError, match=message):
        select_month(**kw)


def test_month_arithmetic_and_range():
    assert Month(2020, 12).next() == Month(2021, 1)
    assert Month(2021, 1).previous() == Month(2020, 12)
    assert parse_trigger_date("2019-01-01T00:00:00") == Month(2018, 12)
    months = month_range(Month(2019, 11), Month(2020, 2))
    assert [str(m) for m in months] == ["2019-11", "2019-12", "2020-01", "2020-02"]
    with pytest.raises(UsageError, match="empty range"):
        month_range(Month(2020, 2), Month(2019, 1))


def test_unknown_taxi_names_the_allowed_values():
    with pytest.raises(UsageError, match="choose one of: yellow, green, fhv"):
        get_taxi("purple")


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("1", Kind.INT, "1"),
        ("1.0", Kind.INT, "1"),
        ("", Kind.INT, None),
        (" 2 ", Kind.CODE, "2"),
        ("1.0", Kind.CODE, "1"),
        ("-3", Kind.INT, "-3"),
        (".20", Kind.FLOAT, ".20"),
        ("-5.5", Kind.FLOAT, "-5.5"),
        ("1e3", Kind.FLOAT, "1e3"),
        ("0e-400", Kind.FLOAT, "0e-400"),  # zero written small is still zero
        ("1.5e-400", Kind.FLOAT, "0"),  # rounds to 0, as Arrow reads it; PostgreSQL refuses the text itself
        ("-1e-999", Kind.FLOAT, "-0"),
        ("1e-310", Kind.FLOAT, "1e-310"),  # a subnormal double, which PostgreSQL keeps
        ("2019-01-01 00:46:40", Kind.TIMESTAMP, "2019-01-01 00:46:40"),
        ("2019-01-01T00:46:40", Kind.TIMESTAMP, "2019-01-01 00:46:40"),
        ("N", Kind.TEXT, "N"),
        ("\xa0", Kind.TEXT, "\xa0"),
    ],
)
def test_parse_value_accepts(value, kind, expected):
    assert parse_value(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        ("1.5", Kind.INT, "not an integer"),
        ("abc", Kind.CODE, "not an integer"),
        ("99999999999", Kind.INT, "out of range"),
        ("--5.1", Kind.FLOAT, "not a number"),
        ("1_000", Kind.FLOAT, "not a number"),
        ("nan", Kind.FLOAT, "not a number"),
        ("1e400", Kind.FLOAT, "out of range"),
        ("2019-13-01 00:00:00", Kind.TIMESTAMP, "invalid timestamp"),
        ("01/01/2019", Kind.TIMESTAMP, "not a timestamp"),
    ],
)
def test_parse_value_rejects_with_reason(value, kind, reason):
    with pytest.raises(ValueError, match=reason):
        parse_value(value, kind)


def test_header_order_case_and_extra_columns():
    names = [c.name for c in YELLOW.csv_columns]
    shuffled = list(reversed(names)) + ["surge_fee"]
    header = match_header(",".join(n.upper() for n in shuffled), YELLOW, "f.csv")
    assert header.extra == ["SURGE_FEE"]
    assert [c.name for c in header.columns if c] == list(reversed(names))


def test_fhv_header_of_2019_matches_case_insensitively():
    line = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
    )
    assert match_header(line, FHV, "fhv.csv").extra == []


def test_header_missing_columns_are_named():
    names = [c.name for c in YELLOW.csv_columns if c.name not in ("fare_amount", "extra")]
    with pytest.raises(BadData, match="lacks yellow column\\(s\\) fare_amount, extra"):
        match_header(",".join(names), YELLOW, "f.csv")


def test_header_of_another_taxi_type_says_so():
    with pytest.raises(BadData, match="looks like a green file"):
        match_header(",".join(c.name for c in GREEN.csv_columns), YELLOW, "f.csv")


def test_worked_example_from_the_course():
    row = {
        "VendorID": "1",
        "tpep_pickup_datetime": "2019-01-01 00:46:40",
        "tpep_dropoff_datetime": "2019-01-01 00:53:20",
        "PULocationID": "151",
        "DOLocationID": "239",
        "fare_amount": "7",
        "trip_distance": "1.50",
    }
    text = key_text(YELLOW, row)
    assert text == "12019-01-01 00:46:402019-01-01 00:53:2015123971.5"
    assert row_id(text) == "cfefc5173cf20c3ddd4989e79dc5aba9"
    assert row_id(text, 2) != row_id(text)


def _floats() -> list[float]:
    rng = random.Random(7)
    special = [
        0.0,
        -0.0,
        7.0,
        1.5,
        0.2,
        1e20,
        1e-05,
        1e15,
        1e14,
        999999999999999.0,
        1e16,
        0.0001,
        0.00009999,
        123456789.123,
        -3.25,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
        2.675,
        1 / 3,
        float("nan"),  # a typed (Parquet) value can be NaN or infinite: its key text must still be PostgreSQL's
        float("inf"),
        float("-inf"),
    ]
    randoms = [rng.uniform(-1000, 1000) for _ in range(300)] + [round(rng.uniform(-500, 500), 2) for _ in range(300)]
    randoms += [rng.uniform(0, 1) * 10 ** rng.randint(-30, 30) for _ in range(300)]
    return special + randoms


def test_float_text_matches_postgresql(test_database):
    values = _floats()
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:
        cur.execute("SET extra_float_digits = 1")
        cur.execute(
            "SELECT v::float8::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
            ([repr(v) for v in values],),
        )
        pg_texts = [r[0] for r in cur.fetchall()]
    assert [pg_float_text(v) for v in values] == pg_texts
    assert float_texts(pa.array(values, pa.float64())).to_pylist() == pg_texts  # the Arrow twin, by whole columns


def test_timestamp_text_matches_postgresql(test_database):
    from datetime import datetime

    stamps = [
        datetime(2019, 1, 1, 0, 46, 40),
        datetime(2090, 12, 31, 23, 59, 59),
        datetime(2001, 1, 1, 0, 0, 0, 500000),
        datetime(999, 5, 6, 7, 8, 9),
        datetime(2020, 2, 29, 12, 0, 0, 123),
    ]
    with psycopg2.connect(test_database) as conn, conn.cursor() as cur:
        cur.execute("SET DateStyle = 'ISO, MDY'")
        cur.execute("SELECT v::text FROM unnest(%s::timestamp[]) WITH ORDINALITY AS u(v, i) ORDER BY i", (stamps,))
        assert [pg_timestamp_text(s) for s in stamps] == [r[0] for r in cur.fetchall()]


# ---------------------------------------------------------------- the pure helpers of the rules


def _rejects(n: int) -> Rejects:
    rejects = Rejects()  # no limit while collecting: check_rejects is the rule under test
    rejects.extend(Reject(line=i + 2, column="fare_amount", reason="not a number: 'x'", raw="...") for i in range(n))
    return rejects


@pytest.mark.parametrize(
    ("limit", "rows", "rejected", "fails"),
    [
        ("0.1%", 10_000, 10, False),  # 0.1% of 10,000 is 10: exactly at the limit passes
        ("0.1%", 10_000, 11, True),
        ("0.1%", 999, 1, True),  # 0.999 rounds down to 0: one bad row of 999 is too many
        ("1%", 1_000, 10, False),
        ("0.005", 1_000, 5, False),  # a fraction without %
        ("0.005", 1_000, 6, True),
        ("100", 10, 10, False),  # a count, whatever the size
        ("0", 1_000_000, 1, True),
        ("0", 10, 0, False),
    ],
)
def test_check_rejects_counts_and_fractions(limit, rows, rejected, fails):
    if not fails:
        check_rejects(_rejects(rejected), rows, limit, "f.csv")
        return
    with pytest.raises(BadData) as exc:
        check_rejects(_rejects(rejected), rows, limit, "f.csv")
    message = str(exc.value)
    assert f"f.csv: {rejected} of {rows} rows rejected, more than --max-rejects {limit} allows" in message
    assert "nothing was loaded" in message and "line 2 fare_amount: not a number" in message


@pytest.mark.parametrize("limit", ["ten", "1%%", "", "-"])
def test_check_rejects_refuses_a_limit_it_cannot_read(limit):
    with pytest.raises(UsageError, match="invalid --max-rejects"):
        check_rejects([], 100, limit, "f.csv")


def test_the_default_limit_is_the_documented_one():
    assert DEFAULT_MAX_REJECTS == "0.1%" and Job(YELLOW, Month(2021, 1)).max_rejects == DEFAULT_MAX_REJECTS


def test_parse_pairs_reads_what_a_failed_backfill_prints():
    assert parse_pairs(" yellow:2020-03, green:2020-07 ,") == [(YELLOW, Month(2020, 3)), (GREEN, Month(2020, 7))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yellow-2020-03", "invalid --only item 'yellow-2020-03': use TAXI:YYYY-MM"),
        ("purple:2020-03", "unknown taxi type 'purple'"),
        ("yellow:2020-13", "the month must be 01..12"),
    ],
)
def test_parse_pairs_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_pairs(text)


def _outcomes(spec: str) -> list[Outcome]:
    """'yellow 2020-01 loaded, ...' into Outcomes: 'not_published' a 404 (exit code 4, to be settled),
    'outside' a month before the source's first (settled: exit code 0)."""
    outcomes = []
    for item in spec.split(","):
        taxi, month, status = item.split()
        code = {"not_published": 4, "outside": 0}.get(status, 0)
        status = UNPUBLISHED if status in ("not_published", "outside") else status.replace("_", " ")
        outcomes.append(Outcome(taxi, month, status, exit_code=code))
    return outcomes


def test_not_published_at_the_end_or_outside_the_source_is_no_failure_and_a_404_before_a_month_is():
    outcomes = _outcomes(
        "yellow 2021-06 loaded, yellow 2021-07 not_published, yellow 2021-08 not_published,"
        "fhvhv 2019-01 outside, fhvhv 2019-02 loaded, fhvhv 2019-03 not_run,"
        "fhv 2020-01 not_published, fhv 2020-02 loaded, fhv 2020-03 not_published, fhv 2020-04 skipped"
    )
    _settle_unpublished(outcomes)
    assert [(o.taxi, o.month, o.status, o.exit_code) for o in outcomes] == [
        ("yellow", "2021-06", LOADED, 0),
        ("yellow", "2021-07", UNPUBLISHED, 0),  # not published yet
        ("yellow", "2021-08", UNPUBLISHED, 0),
        ("fhvhv", "2019-01", UNPUBLISHED, 0),  # before the source's first month
        ("fhvhv", "2019-02", LOADED, 0),
        ("fhvhv", "2019-03", NOT_RUN, 0),
        ("fhv", "2020-01", FAILED, 4),  # a 404 before months that are there: a gap in the source
        ("fhv", "2020-02", LOADED, 0),
        ("fhv", "2020-03", FAILED, 4),
        ("fhv", "2020-04", SKIPPED, 0),
    ]
    assert retry_command(outcomes, "taxi-loader backfill --sink postgres") == (
        "taxi-loader backfill --sink postgres --only fhvhv:2019-03,fhv:2020-01,fhv:2020-03"
    )
    assert retry_command(outcomes[:3], "x") is None


def test_a_month_not_yet_run_after_the_404s_does_not_hide_them():
    outcomes = _outcomes("fhv 2021-07 not_published, fhv 2021-08 not_run")
    _settle_unpublished(outcomes)
    assert [o.status for o in outcomes] == [UNPUBLISHED, NOT_RUN]


@pytest.mark.parametrize(
    ("record", "size", "sha", "skip"),
    [
        (("succeeded", 100, "abc"), 100, "abc", True),
        (("succeeded", 100, "abc"), 100, None, True),  # a remote file: its size is all that is known
        (("succeeded", 100, "abc"), 101, None, False),
        (("succeeded", 100, "abc"), 100, "abd", False),
        (("succeeded", 100, "abc"), None, None, False),  # nothing known: load it
        (("failed", 100, "abc"), 100, "abc", False),
    ],
)
def test_a_month_is_skipped_only_when_loaded_from_the_same_file(record, size, sha, skip):
    status, source_size, source_sha = record
    last = LoadRecord("yellow", "2021-01", status, 10, source_size, source_sha, None)
    assert last.loaded_from(size, sha) is skip


def test_summarize_gives_gaps_between_loaded_months_and_totals_per_year():
    records = [
        LoadRecord("yellow", "2020-11", "succeeded", 5, None, None, "2026-01-01T00:00:00+00:00"),
        LoadRecord("yellow", "2021-02", "succeeded", 7, None, None, None),
        LoadRecord("yellow", "2021-01", "failed", None, None, None, None),
        LoadRecord("green", "2021-01", "succeeded", 3, None, None, None),
    ]
    report = summarize(records)
    assert report["gaps"] == {"green": [], "yellow": ["2020-12", "2021-01"]}
    assert report["totals"] == {"green": {"2021": 3}, "yellow": {"2020": 5, "2021": 7}}
    assert [(m["month"], m["taxi"]) for m in report["months"]] == [
        ("2020-11", "yellow"),
        ("2021-01", "green"),
        ("2021-01", "yellow"),
        ("2021-02", "yellow"),
    ]


def test_columns_to_add_are_the_later_ones_and_a_missing_required_one_is_configuration():
    from taxi_loader.contract import SYSTEM_COLUMNS, columns_to_add
    from taxi_loader.errors import ConfigError

    course = [c.name for c in (*SYSTEM_COLUMNS, *YELLOW.csv_columns)]
    assert [c.name for c in columns_to_add(YELLOW, course, "t", "elsewhere")] == [
        "airport_fee",
        "cbd_congestion_fee",
        "request_source",
    ]
    with pytest.raises(ConfigError, match="missing or of another type: vendorid, x .int.; .*rename it, or elsewhere"):
        columns_to_add(YELLOW, [n for n in course if n != "VendorID"], "t", "elsewhere", ["x (int)"])


@pytest.mark.parametrize(
    ("codes", "code"),
    [({5}, 5), ({3, 5}, 3), ({5, 6}, 6), ({2, 6, 5}, 6), ({1, 6}, 1), ({4, 5}, 4), (set(), 130), ({130, 5}, 130)],
)
def test_a_backfill_with_months_failed_differently_exits_by_one_rule(codes, code):
    from taxi_loader.errors import MonthsFailed

    assert MonthsFailed("x", set(codes)).exit_code == code  # never 1 unless a month met a bug


@pytest.mark.parametrize("fare", ["NaN", "inf", "-Infinity"])
def test_the_fast_path_leaves_a_number_that_is_not_finite_to_the_validating_pass(fare):
    """COPY stores NaN and infinities, but the validating pass and the Parquet reader reject them: a number
    like that sends the file to the validating pass, so that PostgreSQL rejects the row like every sink."""
    from taxi_loader.arrowids import NotCanonical, RowIds

    names = [c.name for c in YELLOW.csv_columns]
    header = match_header(",".join(names), YELLOW, "f.csv")
    row = {c.name: "1" for c in YELLOW.csv_columns}
    row.update(tpep_pickup_datetime="2020-07-01 00:25:32", tpep_dropoff_datetime="2020-07-01 00:33:39")
    row.update(store_and_fwd_flag="N")
    good = ",".join(row[n] for n in names).encode() + b"\n"
    ids = RowIds(header, YELLOW)
    assert len(ids.prefixed(good)[1]) == 16
    for column in ("fare_amount", "tip_amount"):  # a key field, another number (which COPY would take)
        bad = {**row, column: fare}
        with pytest.raises(NotCanonical, match="not finite|not a finite number"):
            ids.prefixed(",".join(bad[n] for n in names).encode() + b"\n")


def test_the_fast_path_prefixes_every_line_with_its_own_id_and_skips_empty_lines():
    """COPY gets each line of a segment once, after `<id>,`, in order, with its newline; an empty line (the CSV
    reader skips it too) gets no id and no row."""
    from taxi_loader.arrowids import NotCanonical, RowIds

    names = [c.name for c in YELLOW.csv_columns]
    header = match_header(",".join(names), YELLOW, "f.csv")
    lines = []
    for i in range(5):
        row = {c.name: "1" for c in YELLOW.csv_columns}
        row.update(tpep_pickup_datetime=f"2020-07-01 00:2{i}:32", tpep_dropoff_datetime="2020-07-01 00:33:39")
        row.update(store_and_fwd_flag="N")
        lines.append(",".join(row[n] for n in names))
    segment = "\n" + "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n"
    ids = RowIds(header, YELLOW)
    out, digests = ids.prefixed(segment.encode())
    expected = [row_id(key_text(YELLOW, dict(zip(names, line.split(","), strict=True)))) for line in lines]
    assert [digests[16 * i : 16 * i + 16].hex() for i in range(len(digests) // 16)] == expected
    assert out.decode() == "".join(f"{id_},{line}\n" for id_, line in zip(expected, lines, strict=True))
    # What the line split and Arrow's reader would not pair up goes to the validating pass.
    for odd in (lines[0] + "\r\n" + lines[1] + "\n", lines[0] + "\n" + lines[1]):
        with pytest.raises(NotCanonical):
            ids.prefixed(odd.encode())


def test_maybe_seen_never_misses_a_digest_added_before(monkeypatch):
    """The cloud path writes a row as it streams only when the filter says its digest is new: a digest added
    before, in an earlier batch, earlier in the same batch, or before the filter grew, must always be caught."""
    import hashlib

    from taxi_loader import seen

    monkeypatch.setattr(seen, "_FIRST_WORDS", 16)  # 51 digests: the filter grows five times below
    digests = [hashlib.md5(str(i).encode()).digest() for i in range(20_000)]
    rng = random.Random(7)
    stream = digests[:10_000] + [rng.choice(digests[:10_000]) for _ in range(500)] + digests[10_000:]
    stream.insert(12_345, stream[12_300])  # a repeat inside one batch
    filter_, caught, first_seen = seen.MaybeSeen(), [], set()
    for start in range(0, len(stream), 999):
        batch = stream[start : start + 999]
        caught += filter_.add(b"".join(batch)).tolist()
    repeats = []
    for d in stream:
        repeats.append(d in first_seen)
        first_seen.add(d)
    assert len(filter_._filters) >= 5
    assert all(c for c, r in zip(caught, repeats, strict=True) if r)  # no repeat ever passes as new
    false_alarms = sum(c and not r for c, r in zip(caught, repeats, strict=True))
    assert false_alarms < 0.01 * len(stream)  # the held rows stay few (tiny filters here: 0.6%)


@pytest.mark.parametrize("run", [7, 1000, 1 << 18])
def test_digests_count_every_repeat_across_runs_and_batches(monkeypatch, run):
    """stage numbers repeats from `Digests.repeated()`: a digest added again in the same batch, in another
    batch of the same run, or in another run (several runs, a part-filled last one) is counted every time;
    digests that share their first 8 bytes (which find the candidates) are told apart."""
    import hashlib
    from collections import Counter

    from taxi_loader.arrowids import Digests

    monkeypatch.setattr(Digests, "RUN_DIGESTS", run)
    rng = random.Random(11)
    distinct = [hashlib.md5(str(i).encode()).digest() for i in range(3_000)]
    stream = distinct + [rng.choice(distinct) for _ in range(300)] + [distinct[5]] * 3
    stream += [distinct[7][:8] + bytes(8)] * 2 + [distinct[7][:8] + b"\x01" * 8, distinct[9][:8] + bytes(8)]
    rng.shuffle(stream)
    with Digests() as digests:
        digests.add(b"".join(stream[:10]))
        digests.clear()  # a pass that starts again forgets them
        for start in range(0, len(stream), 37):
            digests.add(b"".join(stream[start : start + 37]))
        found = digests.repeated()
    assert found == {d.hex(): n for d, n in Counter(stream).items() if n > 1}
    with Digests() as digests:
        assert digests.repeated() == {}  # an empty month


def test_the_command_chooses_arrows_allocator_before_arrow_is_loaded():
    """cli.run sets ARROW_DEFAULT_MEMORY_POOL, which pyarrow reads when first imported: that works only while
    importing the CLI imports no Arrow."""
    import os
    import subprocess
    import sys

    code = (
        "import atexit, os, sys, taxi_loader.cli as cli; assert 'pyarrow' not in sys.modules, 'Arrow loaded early'; "
        "atexit.register(lambda: print(os.environ['ARROW_DEFAULT_MEMORY_POOL'], "
        "__import__('pyarrow').default_memory_pool().backend_name)); "
        "sys.argv = ['taxi-loader', '--help']; cli.run()"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["system", "system"]
    mine = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mine.stdout.split()[-2:] == ["jemalloc", "jemalloc"]  # the user's choice stands
