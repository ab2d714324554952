"""taxi-loader benchmark: the loader against PostgreSQL's own COPY of the same file, in the same run.

Not a test: it prints figures, it asserts nothing. For one generated month with the real size of yellow
2021-01 (or --rows), it times
  (a) the anchor: psql's \\copy of the file (through zcat) into an unindexed, typed, logged table;
  (b) `taxi-loader stage` + `taxi-loader dedup-merge` into a main table already holding --preload months,
      as Kestra runs them; (b1) the same as one `taxi-loader load`;
  (c) the same two commands again: the identical file, recognised, stages nothing; (c1) as one `load`;
  (c2) the same after 1,000 of the month's rows were deleted from the table (a re-run that restores them);
  (e) the course's Kestra SQL on the same file: COPY into staging, UPDATE md5 + filename, MERGE insert-only;
  (f) a first load while the default partition holds the month's rows already (a file saved under a wrong
      month name was loaded before);
  then the same rows as the TLC's Parquet file of that month against (a), the same month into DuckDB
against DuckDB's own read_csv, the cloud path's local pass, a generated High-Volume FHV month of
--fhvhv-rows (rows/s and peak memory against the CSV month's), and backfill months per minute;
as whole processes (wall time, median of --runs; the cloud pass is always the median of 3 runs, the
High-Volume FHV month one run), and reports b/a, c/a, the loader's peak memory and the WAL (a) and (b1) wrote.

    python bench/bench.py                     # 1,369,765 rows
    python bench/bench.py --rows 7667792      # a yellow 2019-01-sized month
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taxi_loader.months import Month  # noqa: E402
from taxi_loader.sinks.duckdb.ddl import DUCK_TYPE  # noqa: E402
from taxi_loader.sinks.postgres.ddl import PG_TYPE  # noqa: E402
from taxi_loader.synthetic import write_month  # noqa: E402
from taxi_loader.taxis import YELLOW  # noqa: E402


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def month_file(out: Path, month: Month, rows: int) -> Path:
    path = out / f"{rows}" / f"yellow_tripdata_{month}.csv.gz"
    if not path.exists():  # written under another name first: an interrupted run leaves no half file behind
        print(f"generating {path} ({rows:,} rows)...", flush=True)
        part = path.with_name(path.name + ".part")
        write_month(part, "yellow", month, rows)
        part.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_369_765)
    ap.add_argument("--preload", type=int, default=3, help="months already in the main table (default 3)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432", help="server URL, no database")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--backfill-months", type=int, default=6, help="months in the backfill figure (0: skip it)")
    ap.add_argument("--backfill-rows", type=int, default=300_000, help="rows per month in the backfill figure")
    ap.add_argument("--no-cloud", action="store_true", help="skip the CSV-to-Parquet figure of the cloud path")
    ap.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB figure")
    ap.add_argument("--no-parquet", action="store_true", help="skip the TLC Parquet figure of the same month")
    ap.add_argument("--fhvhv-rows", type=int, default=20_000_000, help="rows of the High-Volume FHV month (0: skip)")
    args = ap.parse_args()
    # The loader starts as an installed one does, from bytecode (pip compiles a wheel's modules as it installs
    # them). A checkout run with PYTHONDONTWRITEBYTECODE set, as CI machines and the image set it, would
    # compile every module at each start instead: measured 40 ms of each command, a fifth of a re-run's.
    compileall.compile_dir(ROOT / "taxi_loader", quiet=1)

    db = "taxi_loader_bench"
    admin = psycopg2.connect(f"{args.server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db}")
    url = f"{args.server}/{db}"
    target = Month(2021, 1)
    preload = [Month(2020, m) for m in range(1, args.preload + 1)]
    files = {m: month_file(args.out, m, args.rows) for m in [*preload, target]}
    source = str(args.out / f"{args.rows}" / "{taxi}_tripdata_{year}-{month}.csv.gz")
    loader = [sys.executable, "-m", "taxi_loader", "--log-format", "json", "--log-level", "warning"]
    common = ["--taxi", "yellow", "--db-url", url]
    src = ["--source-url", source]

    cols = ", ".join(f"{c.db_name} {PG_TYPE[c.kind]}" for c in YELLOW.csv_columns)
    psql = shutil.which("psql")
    conn = psycopg2.connect(url)
    conn.autocommit = True

    def anchor() -> float:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS anchor; CREATE TABLE anchor ({cols}); CHECKPOINT")
        copy = f"\\copy anchor from program 'zcat {files[target]}' with (format csv, header true)"
        return run([psql, url, "-q", "-c", copy])[0]

    def with_wal(step: Callable[[], Any]) -> tuple[Any, int]:
        """`step()`'s result and the bytes of WAL the server wrote meanwhile: what the step wrote durably (the
        whole server's, so the bench runs alone)."""

        def position() -> int:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return int(cur.fetchone()[0])

        before = position()
        result = step()
        return result, position() - before

    print(f"preloading {len(preload)} months of {args.rows:,} rows...", flush=True)
    for m in preload:
        run([*loader, "load", *common, *src, "--month", str(m)])

    course_sql = course_sequence(conn, url, files[target], preload)

    def two_steps() -> tuple[float, float]:
        total, peak = 0.0, 0.0
        for step in ("stage", "dedup-merge"):
            wall, used = run([*loader, step, *common, *(src if step == "stage" else []), "--month", str(target)])
            total, peak = total + wall, max(peak, used)
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        return total, peak

    def unload() -> None:
        with conn.cursor() as cur:
            # Back to the state before the month's first load: its rows and its partition gone.
            cur.execute("DELETE FROM yellow_tripdata WHERE filename = %s", (YELLOW.filename(str(target)),))
            cur.execute("DROP TABLE IF EXISTS yellow_tripdata_p2021_01")
            cur.execute("DELETE FROM taxi_loader_ledger WHERE month = %s", (str(target),))  # a first load's ledger
            cur.execute("VACUUM yellow_tripdata")
            cur.execute("CHECKPOINT")

    anchors, firsts, first_loads, reruns, loads, restores, courses, peaks = [], [], [], [], [], [], [], []
    anchor_wal, first_wal = [], []
    for _ in range(args.runs):
        wall, wal = with_wal(anchor)
        anchors.append(wall)
        anchor_wal.append(wal)
        unload()
        (wall, peak), wal = with_wal(lambda: run([*loader, "load", *common, *src, "--month", str(target)]))
        first_wal.append(wal)  # first load, one process
        first_loads.append(wall)
        peaks.append(peak)
        unload()
        for bucket in (firsts, reruns):
            wall, peak = two_steps()
            bucket.append(wall)
            peaks.append(peak)
        loads.append(run([*loader, "load", *common, *src, "--month", str(target)])[0])  # identical, one process
        with conn.cursor() as cur:
            cur.execute(
                "DELETE FROM yellow_tripdata WHERE unique_row_id IN (SELECT unique_row_id FROM yellow_tripdata "
                "WHERE filename = %s LIMIT 1000); CHECKPOINT",
                (YELLOW.filename(str(target)),),
            )
        wall, peak = two_steps()
        restores.append(wall)
        peaks.append(peak)
        run([*loader, "cleanup", *common, *src, "--month", str(target)])
        courses.append(course_sql())

    with conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT unique_row_id) FROM yellow_tripdata")
        rows, distinct = cur.fetchone()
        cur.execute(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('yellow_tripdata')"
        )
        size = cur.fetchone()[0]
    default_case = default_partition_figure(args, loader, url, conn, files[target], target, two_steps)
    a, f, r = statistics.median(anchors), statistics.median(firsts), statistics.median(reruns)
    f1 = statistics.median(first_loads)
    d, c, one = statistics.median(restores), statistics.median(courses), statistics.median(loads)
    print(
        f"\nyellow month of {args.rows:,} rows; main table before the load: {len(preload)} months "
        f"({len(preload) * args.rows:,} rows); median of {args.runs} runs; {os.cpu_count()} cores"
    )
    print(f"{'what':<58}{'wall s':>8}{'x COPY':>8}")
    anchor_label = "(a) psql \\copy into a typed, unindexed, logged table"
    print(f"{anchor_label:<58}{a:8.2f}{1:8.2f}")
    print(f"{'(b) taxi-loader stage + dedup-merge, first load':<58}{f:8.2f}{f / a:8.2f}")
    print(f"{'(b1) taxi-loader load, first load (one process)':<58}{f1:8.2f}{f1 / a:8.2f}")
    print(f"{'(c) the same, identical file again (nothing staged)':<58}{r:8.2f}{r / a:8.2f}")
    print(f"{'(c1) taxi-loader load, identical file again (one process)':<58}{one:8.2f}{one / a:8.2f}")
    print(f"{'(c2) the same after 1,000 of its rows were deleted':<58}{d:8.2f}{d / a:8.2f}")
    print(f"{'(e) the course Kestra SQL (COPY, UPDATE md5, MERGE)':<58}{c:8.2f}{c / a:8.2f}")
    f_label, x = "(f) first load, the month already in the default partition", default_case
    print(f"{f_label:<58}{x:8.2f}{x / a:8.2f}")
    print(f"peak memory of a loader process: {max(peaks):.0f} MB")
    aw, fw = statistics.median(anchor_wal) / 1e6, statistics.median(first_wal) / 1e6
    # What a slow disk charges for: the rows with their ids, then each index's pages (which PostgreSQL also
    # fsyncs as the index's build ends).
    print(f"WAL written: (a) {aw:.0f} MB, (b1) {fw:.0f} MB ({fw / aw:.2f}x)")
    print(f"main table after: {rows:,} rows, {distinct:,} distinct ids, {size}")
    if not args.no_parquet:
        parquet_figure(files[target], args, loader, url, conn, anchor)
    if args.fhvhv_rows:
        fhvhv_figure(args, loader, url, conn, max(peaks))
    if not args.no_duckdb:
        duckdb_figure(files[target], source, args, loader)
    if not args.no_cloud:
        cloud_figure(files[target], args.rows, args.out)
    if args.backfill_months:
        backfill_figure(args, loader, url, conn)


def course_sequence(conn, url: str, path: Path, preload: list[Month]):
    """The course's Kestra flow on PostgreSQL, as SQL: a main table without a unique key holding the preloaded
    months, and per load a COPY into a shared staging table, an UPDATE setting md5 and filename, a MERGE that
    inserts what is not there. Returns a function timing one load (whole, in one psql process)."""
    cols = [c.db_name for c in YELLOW.csv_columns]
    typed = ", ".join(f"{c.db_name} {PG_TYPE[c.kind]}" for c in YELLOW.csv_columns)
    key = " || ".join(f"COALESCE(CAST({YELLOW.column(k).db_name} AS text), '')" for k in YELLOW.key_fields)
    with conn.cursor() as cur:
        cur.execute(
            f"DROP TABLE IF EXISTS course_main, course_staging; "
            f"CREATE TABLE course_main (unique_row_id text, filename text, {typed}); "
            f"INSERT INTO course_main SELECT unique_row_id, filename, {', '.join(cols)} FROM yellow_tripdata "
            "WHERE filename = ANY(%s)",
            ([YELLOW.filename(str(m)) for m in preload],),
        )
    name = path.name.removesuffix(".gz")
    listed, values = ", ".join(cols), ", ".join("S." + c for c in cols)
    script = [  # psql runs one meta-command or one SQL string per -c, in order
        f"CREATE TABLE IF NOT EXISTS course_staging (unique_row_id text, filename text, {typed})",
        "TRUNCATE course_staging",
        f"\\copy course_staging ({listed}) from program 'zcat {path}' with (format csv, header true)",
        f"UPDATE course_staging SET unique_row_id = md5({key}), filename = '{name}'",
        "MERGE INTO course_main AS T USING course_staging AS S ON T.unique_row_id = S.unique_row_id "
        f"WHEN NOT MATCHED THEN INSERT (unique_row_id, filename, {listed}) "
        f"VALUES (S.unique_row_id, S.filename, {values})",
    ]

    def once() -> float:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM course_main WHERE filename = %s", (name,))
            cur.execute("VACUUM course_main")
            cur.execute("CHECKPOINT")
        commands = [a for c in script for a in ("-c", c)]
        return run([shutil.which("psql"), url, "-q", "-v", "ON_ERROR_STOP=1", *commands])[0]

    return once


def default_partition_figure(args, loader, url, conn, path: Path, target: Month, two_steps) -> float:
    """A first load of `target` while the default partition already holds its rows: the same file loaded
    before under another month's name (its rows all out of that month, so they went to the default
    partition). Returns the wall time of stage + dedup-merge."""
    misnamed = args.out / "misnamed"
    misnamed.mkdir(parents=True, exist_ok=True)
    wrong = Month(2022, 6)
    link = misnamed / f"yellow_tripdata_{wrong}.csv.gz"
    link.unlink(missing_ok=True)
    link.symlink_to(path)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM yellow_tripdata WHERE filename = %s", (YELLOW.filename(str(target)),))
        cur.execute("DROP TABLE IF EXISTS yellow_tripdata_p2021_01")
        cur.execute("VACUUM yellow_tripdata")
        cur.execute("CHECKPOINT")
    source = str(misnamed / "{taxi}_tripdata_{year}-{month}.csv.gz")
    run([*loader, "load", "--taxi", "yellow", "--db-url", url, "--month", str(wrong), "--source-url", source])
    wall, _ = two_steps()
    with conn.cursor() as cur:  # as it was: the month loaded, nothing of the misnamed file
        cur.execute("DELETE FROM yellow_tripdata WHERE filename = %s", (YELLOW.filename(str(wrong)),))
        cur.execute("DROP TABLE IF EXISTS yellow_tripdata_p2022_06")
    return wall


def parquet_figure(path: Path, args, loader: list[str], url: str, conn, anchor) -> None:
    """The same rows as the TLC publishes them (Parquet with 2021's types, 1M-row row groups): `taxi-loader
    load` into an empty schema, against psql's COPY of the CSV (measured again, in the same run)."""
    parquet = path.with_name("yellow_tripdata_2021-01.parquet")
    if not parquet.exists():
        print(f"writing {parquet}...", flush=True)
        part = parquet.with_name(parquet.name + ".part")
        # In a process of its own: the whole table in this one would count in every later child's peak memory
        # (a child starts as a copy of this process, and its peak RSS includes the pages it shares).
        write = (
            "import sys, pyarrow.parquet as pq; from taxi_loader.synthetic_tlc import from_csv; "
            "pq.write_table(from_csv(sys.argv[1], 'yellow', 2021, 1), sys.argv[2], row_group_size=1 << 20)"
        )
        run([sys.executable, "-c", write, str(path), str(part)])
        part.rename(parquet)
    ours = [*loader, "load", "--taxi", "yellow", "--month", "2021-01", "--db-url", url, "--schema", "parquet_bench"]
    ours += ["--source-url", str(parquet)]
    anchors, firsts, peaks = [], [], []
    for _ in range(args.runs):
        anchors.append(anchor())
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS parquet_bench CASCADE; CHECKPOINT")
        wall, peak = run(ours)
        firsts.append(wall)
        peaks.append(peak)
    a, f = statistics.median(anchors), statistics.median(firsts)
    size = parquet.stat().st_size / 1e6
    print(f"\nthe same {args.rows:,} rows as the TLC's Parquet ({size:.0f} MB), median of {args.runs} runs")
    print(f"{'what':<58}{'wall s':>8}{'x COPY':>8}")
    anchor_label = "(a) psql \\copy of the CSV, as above"
    print(f"{anchor_label:<58}{a:8.2f}{1:8.2f}")
    print(f"{'(d) taxi-loader load from the Parquet file, first load':<58}{f:8.2f}{f / a:8.2f}")
    print(f"peak memory of a loader process: {max(peaks):.0f} MB")


def fhvhv_figure(args, loader: list[str], url: str, conn, csv_peak: float) -> None:
    """A generated High-Volume FHV month of --fhvhv-rows (the real ones hold ~20M) into an empty schema: rows
    per second, and peak memory against the CSV month's (it must not grow with the month)."""
    path = args.out / f"fhvhv{args.fhvhv_rows}" / "fhvhv_tripdata_2024-06.parquet"
    if not path.exists():  # write_generated writes under another name first
        print(f"generating {path} ({args.fhvhv_rows:,} rows)...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write = (
            "import sys; from taxi_loader.synthetic_tlc import write_generated; "
            "write_generated(sys.argv[1], 'fhvhv', 2024, 6, int(sys.argv[2]))"
        )
        run([sys.executable, "-c", write, str(path), str(args.fhvhv_rows)])  # in a process of its own, as above
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS fhvhv_bench CASCADE; CHECKPOINT")
    ours = [*loader, "load", "--taxi", "fhvhv", "--month", "2024-06", "--db-url", url, "--schema", "fhvhv_bench"]
    wall, peak = run([*ours, "--source-url", str(path)])
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM fhvhv_bench.fhvhv_tripdata")
        rows = cur.fetchone()[0]
        cur.execute("DROP SCHEMA fhvhv_bench CASCADE")
    print(f"\nHigh-Volume FHV month of {args.fhvhv_rows:,} generated rows ({path.stat().st_size / 1e6:.0f} MB Parquet)")
    print(f"taxi-loader load: {wall:.1f} s, {args.fhvhv_rows / wall:,.0f} rows/s, {rows:,} rows in the table")
    print(f"peak memory: {peak:.0f} MB ({peak - csv_peak:+.0f} MB against the CSV month's {csv_peak:.0f} MB)")


def duckdb_figure(path: Path, source: str, args, loader: list[str]) -> None:
    """A month into a new DuckDB file: `taxi-loader load --sink duckdb` (and its re-run) against DuckDB's own
    read_csv of the same file into a table, each a whole process."""
    db = args.out / "bench.duckdb"
    columns = {c.name: DUCK_TYPE[c.kind] for c in YELLOW.csv_columns}
    create = f"CREATE TABLE anchor AS SELECT * FROM read_csv({str(path)!r}, header = true, columns = {columns!r})"
    anchor = [sys.executable, "-c", f"import duckdb; duckdb.connect({str(db)!r}).execute({create!r})"]
    ours = [*loader, "load", "--sink", "duckdb", "--duckdb-path", str(db), "--taxi", "yellow", "--month", "2021-01"]
    ours += ["--source-url", source]

    def fresh() -> None:
        for p in (db, db.with_name(db.name + ".wal")):
            p.unlink(missing_ok=True)

    anchors, firsts, reruns, peaks = [], [], [], []
    for _ in range(args.runs):
        fresh()
        anchors.append(run(anchor)[0])
        fresh()
        for bucket in (firsts, reruns):
            wall, peak = run(ours)
            bucket.append(wall)
            peaks.append(peak)
    fresh()
    a, f, r = statistics.median(anchors), statistics.median(firsts), statistics.median(reruns)
    print(f"\nDuckDB: the same month into a new database file, median of {args.runs} runs")
    print(f"{'what':<58}{'wall s':>8}{'x read_csv':>11}")
    print(f"{'(a) DuckDB read_csv into a typed table':<58}{a:8.2f}{1:11.2f}")
    print(f"{'(b) taxi-loader load --sink duckdb, first load':<58}{f:8.2f}{f / a:11.2f}")
    print(f"{'(c) taxi-loader load --sink duckdb, re-run (inserts 0)':<58}{r:8.2f}{r / a:11.2f}")
    print(f"peak memory of a loader process: {max(peaks):.0f} MB")


def cloud_figure(path: Path, rows: int, out: Path) -> None:
    """The cloud path's local cost: CSV to typed Parquet with ids, against pyarrow reading the same file."""
    parquet = out / "bench.parquet"
    ours = [
        sys.executable,
        "-c",
        "import sys; from pathlib import Path; from taxi_loader.sinks.bigquery.parquet import "
        "write_month_parquet; from taxi_loader.taxis import YELLOW; "
        f"write_month_parquet(Path({str(path)!r}), YELLOW, '2021-01', Path({str(parquet)!r}))",
    ]
    plain = out / "plain.parquet"
    arrow = [
        sys.executable,
        "-c",
        f"import pyarrow.csv as c, pyarrow.parquet as p; p.write_table(c.read_csv({str(path)!r}), {str(plain)!r})",
    ]
    # The taxi-loader command chooses Arrow's allocator (cli.run sets ARROW_DEFAULT_MEMORY_POOL); called as a
    # library here, the pass gets the same setting the same way. pyarrow's own pass keeps pyarrow's default.
    ours_env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    runs = [(run(arrow), run(ours, ours_env)) for _ in range(3)]
    (a, a_mb), (b, b_mb) = ((statistics.median(r[i][0] for r in runs), max(r[i][1] for r in runs)) for i in (0, 1))
    print(f"\nupload-gcs's local pass (CSV.gz -> typed Parquet with ids), {rows:,} rows, median of 3")
    print(f"{'what':<52}{'wall s':>8}{'rows/s':>12}{'peak MB':>9}")
    print(f"{'pyarrow: read_csv, then write_table (untyped, no ids)':<52}{a:8.2f}{rows / a:12,.0f}{a_mb:9.0f}")
    print(f"{'taxi-loader: validate, ids, write Parquet':<52}{b:8.2f}{rows / b:12,.0f}{b_mb:9.0f}")
    print(f"ratio: {b / a:.1f}x pyarrow's own read and write (which holds the whole file in memory)")


def backfill_figure(args, loader: list[str], url: str, conn) -> None:
    """Months per minute of `taxi-loader backfill` at --jobs 1 and 2, each into an empty schema."""
    months = [Month(2019, 1)]
    while len(months) < args.backfill_months:
        months.append(months[-1].next())
    for m in months:
        month_file(args.out, m, args.backfill_rows)
    source = str(args.out / f"{args.backfill_rows}" / "{taxi}_tripdata_{year}-{month}.csv.gz")
    print(f"\nbackfill of {len(months)} months x {args.backfill_rows:,} rows (yellow, {months[0]}..{months[-1]})")
    print(f"{'jobs':<6}{'wall s':>8}{'months/min':>12}{'table size':>14}")
    for jobs in (1, 2):
        schema = f"backfill_jobs{jobs}"
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            cur.execute("CHECKPOINT")
        wall, _ = run(
            [
                *loader,
                "backfill",
                "--taxi",
                "yellow",
                "--from",
                str(months[0]),
                "--to",
                str(months[-1]),
                "--jobs",
                str(jobs),
                "--db-url",
                url,
                "--schema",
                schema,
                "--source-url",
                source,
            ]
        )
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) "
                f"FROM pg_partition_tree('{schema}.yellow_tripdata')"
            )
            size = cur.fetchone()[0]
        print(f"{jobs:<6}{wall:8.1f}{len(months) / wall * 60:12.1f}{size:>14}")


if __name__ == "__main__":
    main()
