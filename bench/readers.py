"""Why pyarrow and not pandas reads the files: both readers, typed, streaming, over the same generated month.

Not part of `make bench` (pandas is not a dependency of taxi-loader): run it in a venv that has pandas,
`pip install pandas && python bench/readers.py`. It prints rows/s and the peak memory of each reader, each in
a process of its own.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 1_369_765  # yellow 2021-01's size
INTS = ["VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type"]
TIMES = ["tpep_pickup_datetime", "tpep_dropoff_datetime"]


def read(reader: str, path: str) -> None:
    start, rows = time.perf_counter(), 0
    if reader == "pyarrow":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {**dict.fromkeys(INTS, pa.int64()), **dict.fromkeys(TIMES, pa.timestamp("s"))}
        for batch in pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=2 << 20),
            convert_options=pacsv.ConvertOptions(column_types=types, timestamp_parsers=["%Y-%m-%d %H:%M:%S"]),
        ):
            rows += batch.num_rows
    else:
        import pandas as pd

        chunks = pd.read_csv(
            path,
            chunksize=100_000,
            dtype=dict.fromkeys(INTS, "Int64"),
            parse_dates=TIMES,
            date_format="%Y-%m-%d %H:%M:%S",
        )
        for chunk in chunks:
            rows += len(chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{reader:>8}: {rows:,} rows in {seconds:.2f} s = {rows / seconds / 1000:,.0f}k rows/s, peak {peak:.0f} MB")


def main() -> None:
    if len(sys.argv) == 3:
        read(sys.argv[1], sys.argv[2])
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from taxi_loader.months import Month
    from taxi_loader.synthetic import write_month

    with tempfile.TemporaryDirectory() as tmp:
        path = write_month(Path(tmp) / "yellow.csv.gz", "yellow", Month(2021, 1), ROWS)
        for reader in ("pyarrow", "pandas", "pyarrow", "pandas"):
            subprocess.run([sys.executable, __file__, reader, str(path)], check=True)


if __name__ == "__main__":
    main()
