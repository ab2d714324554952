SELECT pg_advisory_lock(%s)
SELECT pg_advisory_xact_lock(%s)
SELECT 1 FROM pg_namespace WHERE nspname = %s
CREATE SCHEMA "{schema}"
CREATE TABLE IF NOT EXISTS "{schema}"."taxi_loader_ledger" (load_id bigserial PRIMARY KEY, "sink" text NOT NULL, "taxi" text NOT NULL, "month" text NOT NULL, "filename" text NOT NULL, "source" text, "source_size" bigint, "source_sha256" text, "rows_read" bigint, "rows_rejected" bigint, "rows_repeated" bigint, "rows_inserted" bigint, "rows_present" bigint, "rows_suspicious" bigint, "rows_after" bigint, "started_at" timestamptz, "finished_at" timestamptz, "status" text NOT NULL, "error" text, "loader_version" text)
CREATE INDEX IF NOT EXISTS "taxi_loader_ledger_month_idx" ON "{schema}"."taxi_loader_ledger" (sink, taxi, month, load_id)
CREATE TABLE IF NOT EXISTS "{schema}"."yellow_tripdata_rejects" ("filename" text NOT NULL, "line" bigint NOT NULL, "column_name" text, "reason" text NOT NULL, "raw_line" text, recorded_at timestamptz NOT NULL DEFAULT now())
SELECT pg_advisory_lock(%s)
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT to_regclass(%s), to_regclass(%s)
SELECT pg_advisory_xact_lock(%s)
DROP TABLE IF EXISTS "{schema}"."yellow_tripdata_staging_2020_07" CASCADE
CREATE TABLE "{schema}"."yellow_tripdata_staging_2020_07" ("unique_row_id" text NOT NULL, "vendorid" text, "tpep_pickup_datetime" timestamp, "tpep_dropoff_datetime" timestamp, "passenger_count" integer, "trip_distance" double precision, "ratecodeid" text, "store_and_fwd_flag" text, "pulocationid" text, "dolocationid" text, "payment_type" integer, "fare_amount" double precision, "extra" double precision, "mta_tax" double precision, "tip_amount" double precision, "tolls_amount" double precision, "improvement_surcharge" double precision, "total_amount" double precision, "congestion_surcharge" double precision, "airport_fee" double precision, "cbd_congestion_fee" double precision, "request_source" text)
COPY "{schema}"."yellow_tripdata_staging_2020_07" ("unique_row_id", "vendorid", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance", "ratecodeid", "store_and_fwd_flag", "pulocationid", "dolocationid", "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge") FROM STDIN WITH (FORMAT csv, FREEZE)
ALTER TABLE "{schema}"."yellow_tripdata_staging_2020_07" ADD COLUMN "filename" text DEFAULT 'yellow_tripdata_2020-07.csv'
DELETE FROM "{schema}"."yellow_tripdata_rejects" WHERE filename = %s
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
CREATE TABLE "{schema}"."yellow_tripdata" ("unique_row_id" text NOT NULL, "filename" text, "vendorid" text, "tpep_pickup_datetime" timestamp, "tpep_dropoff_datetime" timestamp, "passenger_count" integer, "trip_distance" double precision, "ratecodeid" text, "store_and_fwd_flag" text, "pulocationid" text, "dolocationid" text, "payment_type" integer, "fare_amount" double precision, "extra" double precision, "mta_tax" double precision, "tip_amount" double precision, "tolls_amount" double precision, "improvement_surcharge" double precision, "total_amount" double precision, "congestion_surcharge" double precision, "airport_fee" double precision, "cbd_congestion_fee" double precision, "request_source" text) PARTITION BY RANGE ("tpep_pickup_datetime")
CREATE TABLE "{schema}"."yellow_tripdata_pdefault" PARTITION OF "{schema}"."yellow_tripdata" DEFAULT
CREATE UNIQUE INDEX "yellow_tripdata_unique_row_id_key" ON "{schema}"."yellow_tripdata" (unique_row_id COLLATE "C", "tpep_pickup_datetime")
CREATE INDEX "yellow_tripdata_filename_idx" ON "{schema}"."yellow_tripdata" (filename)
SELECT c.relkind = 'p', EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = c.oid AND i.indisunique AND a.attname = 'unique_row_id' AND i.indpred IS NULL) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
SELECT pg_advisory_lock(%s)
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT load_id, source_size, source_sha256, rows_read, rows_rejected, rows_repeated, rows_suspicious, rows_after FROM "{schema}"."taxi_loader_ledger" WHERE sink = %s AND taxi = %s AND month = %s AND status = %s ORDER BY load_id DESC LIMIT 1
SELECT to_regclass(%s) IS NOT NULL
SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0
SELECT count(*) FROM "{schema}"."yellow_tripdata" WHERE filename = %s
SELECT to_regclass(%s) IS NOT NULL
SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'unique_row_id' AND NOT attisdropped)
SELECT EXISTS (SELECT FROM "{schema}"."yellow_tripdata_staging_2020_07")
SELECT relpersistence = 'p' AND to_regclass(%s) IS NULL FROM pg_class WHERE oid = to_regclass(%s)
SELECT count(*) <= %s FROM (SELECT FROM "{schema}"."yellow_tripdata_pdefault" d WHERE "d"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "d"."tpep_pickup_datetime" < '2020-08-01'::timestamp LIMIT %s) m
SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)
SET LOCAL maintenance_work_mem = %s; SET LOCAL max_parallel_maintenance_workers = 0
SET LOCAL synchronize_seqscans = off
CREATE UNIQUE INDEX "yellow_tripdata_p2020_07_unique_row_id_key" ON "{schema}"."yellow_tripdata_staging_2020_07" (unique_row_id COLLATE "C", "tpep_pickup_datetime")
SET LOCAL synchronous_commit = off
SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1
SET LOCAL jit = off; SET LOCAL work_mem = %(mem)s; SET LOCAL maintenance_work_mem = %(mem)s
SELECT relpersistence = 'p' AND to_regclass(%s) IS NULL FROM pg_class WHERE oid = to_regclass(%s)
SELECT pg_advisory_xact_lock(%s)
WITH moved AS (DELETE FROM "{schema}"."yellow_tripdata_staging_2020_07" s WHERE s.ctid = ANY(%s::tid[]) AND ("s"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "s"."tpep_pickup_datetime" < '2020-08-01'::timestamp) IS NOT TRUE RETURNING s.*), ins AS (INSERT INTO "{schema}"."yellow_tripdata" ("unique_row_id", "filename", "vendorid", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance", "ratecodeid", "store_and_fwd_flag", "pulocationid", "dolocationid", "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge", "airport_fee", "cbd_congestion_fee", "request_source") SELECT "unique_row_id", "filename", "vendorid", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance", "ratecodeid", "store_and_fwd_flag", "pulocationid", "dolocationid", "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge", "airport_fee", "cbd_congestion_fee", "request_source" FROM moved ORDER BY "moved"."unique_row_id" COLLATE "C" ON CONFLICT (unique_row_id COLLATE "C", "tpep_pickup_datetime") DO NOTHING RETURNING 1) SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM ins)
CREATE TEMP TABLE taxi_loader_moved ON COMMIT DROP AS WITH moved AS (DELETE FROM "{schema}"."yellow_tripdata_pdefault" d WHERE "d"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "d"."tpep_pickup_datetime" < '2020-08-01'::timestamp RETURNING d.*) SELECT * FROM moved
ALTER TABLE "{schema}"."yellow_tripdata_staging_2020_07" ALTER COLUMN filename DROP DEFAULT
ALTER TABLE "{schema}"."yellow_tripdata_staging_2020_07" RENAME TO "yellow_tripdata_p2020_07"
SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)
ALTER TABLE "{schema}"."yellow_tripdata_p2020_07" ADD CONSTRAINT "yellow_tripdata_p2020_07_month" CHECK ("tpep_pickup_datetime" IS NOT NULL AND "tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "tpep_pickup_datetime" < '2020-08-01'::timestamp)
ALTER TABLE "{schema}"."yellow_tripdata" ATTACH PARTITION "{schema}"."yellow_tripdata_p2020_07" FOR VALUES FROM ('2020-07-01') TO ('2020-08-01')
UPDATE "{schema}"."taxi_loader_ledger" SET "rows_repeated" = %s, "rows_inserted" = %s, "rows_present" = %s, "rows_suspicious" = %s, "rows_after" = %s, finished_at = now(), status = %s WHERE load_id = %s
SELECT pg_advisory_unlock(%s)
SELECT pg_advisory_xact_lock(%s)
SELECT to_regclass(%s) IS NOT NULL
DROP TABLE IF EXISTS "{schema}"."yellow_tripdata_staging_2020_07" CASCADE
SET LOCAL synchronous_commit = off
SELECT pg_advisory_unlock(%s)
-- connection 2
SET LOCAL maintenance_work_mem = %s; SET LOCAL max_parallel_maintenance_workers = 0
SET LOCAL synchronize_seqscans = off
CREATE INDEX "yellow_tripdata_p2020_07_filename_idx" ON "{schema}"."yellow_tripdata_staging_2020_07" (filename)
SET LOCAL synchronous_commit = off
SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 1
SET LOCAL jit = off; SET LOCAL work_mem = %(mem)s; SET LOCAL maintenance_work_mem = %(mem)s
SELECT count(*), count(*) FILTER (WHERE (("s"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "s"."tpep_pickup_datetime" < '2020-08-01'::timestamp) IS NOT TRUE OR "s"."tpep_dropoff_datetime" < "s"."tpep_pickup_datetime" OR "s"."fare_amount" < 0 OR "s"."extra" < 0 OR "s"."mta_tax" < 0 OR "s"."tip_amount" < 0 OR "s"."tolls_amount" < 0 OR "s"."improvement_surcharge" < 0 OR "s"."total_amount" < 0)), count(*) FILTER (WHERE ("s"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "s"."tpep_pickup_datetime" < '2020-08-01'::timestamp) IS NOT TRUE), 0, CASE WHEN count(*) FILTER (WHERE ("s"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "s"."tpep_pickup_datetime" < '2020-08-01'::timestamp) IS NOT TRUE) <= 100000 THEN coalesce(array_agg(s.ctid) FILTER (WHERE ("s"."tpep_pickup_datetime" >= '2020-07-01'::timestamp AND "s"."tpep_pickup_datetime" < '2020-08-01'::timestamp) IS NOT TRUE), '{}')::text[] END FROM "{schema}"."yellow_tripdata_staging_2020_07" s
