"""taxi-loader: load the NYC taxi trip files into PostgreSQL (or GCS + BigQuery), once per row, fast."""

__version__ = "0.1.0"
