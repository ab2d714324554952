#!/usr/bin/env bash
# Sets up the BigQuery emulator (local-bigquery 0.3.2, DuckDB-backed) in its own Python 3.13 environment,
# with DuckDB's extensions installed from PyPI wheels into a private HOME (DuckDB would otherwise try to
# download them at start-up, which fails offline). The GCS emulator runs in the project's own venv.
# Usage: scripts/setup-emulators.sh [DIR]   (default .emulators). Fails loudly when no Python 3.13 exists.
set -euo pipefail
dir="${1:-.emulators}"
py=""
candidates=(python3.13)
if command -v pyenv >/dev/null; then candidates+=("$(pyenv root)"/versions/3.13*/bin/python3.13); fi
for p in "${candidates[@]}"; do
  # a pyenv shim answers `command -v` but fails to run: ask the interpreter itself
  if "$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then py="$p"; break; fi
done
if [ -z "$py" ]; then
  echo "ERROR: no Python 3.13 found (looked for python3.13 on PATH and under pyenv); the BigQuery emulator needs it: install it (pyenv install 3.13, or your distribution's python3.13); make install and the loader need only 3.11" >&2
  exit 1
fi
if [ ! -x "$dir/venv/bin/local-bigquery" ]; then
  "$py" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --upgrade pip
  "$dir/venv/bin/pip" install --quiet local-bigquery==0.3.2 duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \
    duckdb-extension-icu==1.5.5 duckdb-extension-spatial==1.5.5 duckdb-extension-httpfs==1.5.5
fi
mkdir -p "$dir/home"
HOME="$(cd "$dir/home" && pwd)" "$dir/venv/bin/python" - <<'PY'
import glob, importlib.util, os, duckdb
con = duckdb.connect()
for name in ("ducklake", "icu", "spatial", "httpfs"):
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.duckdb_extension"), recursive=True)
    con.execute(f"INSTALL '{files[0]}'")
print("duckdb extensions installed in", os.environ["HOME"])
PY
echo "BigQuery emulator ready: $dir/venv/bin/local-bigquery"
