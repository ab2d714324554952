SELECT pg_advisory_lock(%s)
SELECT pg_advisory_xact_lock(%s)
SELECT 1 FROM pg_namespace WHERE nspname = %s
CREATE TABLE IF NOT EXISTS "{schema}"."taxi_loader_ledger" (load_id bigserial PRIMARY KEY, "sink" text NOT NULL, "taxi" text NOT NULL, "month" text NOT NULL, "filename" text NOT NULL, "source" text, "source_size" bigint, "source_sha256" text, "rows_read" bigint, "rows_rejected" bigint, "rows_repeated" bigint, "rows_inserted" bigint, "rows_present" bigint, "rows_suspicious" bigint, "rows_after" bigint, "started_at" timestamptz, "finished_at" timestamptz, "status" text NOT NULL, "error" text, "loader_version" text)
CREATE INDEX IF NOT EXISTS "taxi_loader_ledger_month_idx" ON "{schema}"."taxi_loader_ledger" (sink, taxi, month, load_id)
CREATE TABLE IF NOT EXISTS "{schema}"."yellow_tripdata_rejects" ("filename" text NOT NULL, "line" bigint NOT NULL, "column_name" text, "reason" text NOT NULL, "raw_line" text, recorded_at timestamptz NOT NULL DEFAULT now())
SELECT pg_advisory_lock(%s)
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT max(load_id) FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s
SELECT to_regclass(%s) IS NOT NULL
SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0
SELECT count(*) FROM "{schema}"."yellow_tripdata" WHERE filename = %s
SELECT pg_advisory_xact_lock(%s)
SELECT to_regclass(%s) IS NOT NULL
DROP TABLE IF EXISTS "{schema}"."yellow_tripdata_staging_2020_07" CASCADE
SET LOCAL synchronous_commit = off
INSERT INTO "{schema}"."taxi_loader_ledger" ("sink", "taxi", "month", "filename", "source", "started_at", "source_size", "source_sha256", "rows_read", "rows_rejected", "rows_repeated", "status", "loader_version") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
SET LOCAL synchronous_commit = off
SELECT pg_advisory_unlock(%s)
SELECT pg_advisory_xact_lock(%s)
SELECT 1 FROM pg_namespace WHERE nspname = %s
CREATE TABLE IF NOT EXISTS "{schema}"."taxi_loader_ledger" (load_id bigserial PRIMARY KEY, "sink" text NOT NULL, "taxi" text NOT NULL, "month" text NOT NULL, "filename" text NOT NULL, "source" text, "source_size" bigint, "source_sha256" text, "rows_read" bigint, "rows_rejected" bigint, "rows_repeated" bigint, "rows_inserted" bigint, "rows_present" bigint, "rows_suspicious" bigint, "rows_after" bigint, "started_at" timestamptz, "finished_at" timestamptz, "status" text NOT NULL, "error" text, "loader_version" text)
CREATE INDEX IF NOT EXISTS "taxi_loader_ledger_month_idx" ON "{schema}"."taxi_loader_ledger" (sink, taxi, month, load_id)
CREATE TABLE IF NOT EXISTS "{schema}"."yellow_tripdata_rejects" ("filename" text NOT NULL, "line" bigint NOT NULL, "column_name" text, "reason" text NOT NULL, "raw_line" text, recorded_at timestamptz NOT NULL DEFAULT now())
SELECT pg_advisory_xact_lock(%s)
SELECT c.relkind = 'p', EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = c.oid AND i.indisunique AND a.attname = 'unique_row_id' AND i.indpred IS NULL) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
SELECT pg_advisory_lock(%s)
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT to_regclass(%s) IS NOT NULL
SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0
SELECT count(*) FROM "{schema}"."yellow_tripdata" WHERE filename = %s
SELECT to_regclass(%s) IS NOT NULL
SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1
SET LOCAL jit = off; SET LOCAL work_mem = %(mem)s; SET LOCAL maintenance_work_mem = %(mem)s
UPDATE "{schema}"."taxi_loader_ledger" SET "rows_repeated" = %s, "rows_inserted" = %s, "rows_present" = %s, "rows_suspicious" = %s, "rows_after" = %s, finished_at = now(), status = %s WHERE load_id = %s
SET LOCAL synchronous_commit = off
SELECT pg_advisory_unlock(%s)
SELECT pg_advisory_xact_lock(%s)
SELECT to_regclass(%s) IS NOT NULL
DROP TABLE IF EXISTS "{schema}"."yellow_tripdata_staging_2020_07" CASCADE
SET LOCAL synchronous_commit = off
SELECT pg_advisory_unlock(%s)
