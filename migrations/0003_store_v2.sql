-- Store v2 (docs/storage.md): `samples` becomes the recent tier, written at
-- ingest and clustered by time; every 5 minutes ("a block") its oldest block
-- is compacted into change points clustered by block and series, and into
-- rollups of 1 minute, 5 minutes and 1 hour. The views keep their meaning:
-- metric_samples still has one row per series per successful scrape.

-- The store's own progress: `compacted_until` (epoch seconds): `samples` holds
-- nothing older; everything before it is in `frames`, `points` and the rollups.
CREATE TABLE store_state (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;

-- One row per stored scrape of an instance in the compacted tier: the instants
-- at which its series have values. `block` = floor(time / 300); `toff` =
-- milliseconds since the block's start.
CREATE TABLE frames (
    instance_id TEXT NOT NULL,
    time        REAL NOT NULL,
    block       INTEGER NOT NULL,
    toff        INTEGER NOT NULL,
    PRIMARY KEY (instance_id, time)
) WITHOUT ROWID;

-- Change points: a series' value is written at its first frame in a block (a
-- keyframe), then only when it changes. `value`: NULL for NaN, a zero-length
-- BLOB when the series is absent from a stored scrape (a gap, until the next
-- point). The value at a frame is the block's latest point at or before it.
CREATE TABLE points (
    block     INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    toff      INTEGER NOT NULL,
    value,
    PRIMARY KEY (block, series_id, toff)
) WITHOUT ROWID;

-- The start of every rollup bucket that holds data, per width in seconds: the
-- rollup views range-search this on REAL time, then look rows up by key.
CREATE TABLE rollup_buckets (
    width INTEGER NOT NULL,
    time  REAL NOT NULL,
    PRIMARY KEY (width, time)
) WITHOUT ROWID;

-- Rollups of each series per bucket (time = bucket start, integral seconds):
-- count, sum, min, max and last of the values that are numbers (NaN is
-- left out of all of them), and for counters the reset-aware increase over the bucket and the
-- seconds it spans (from the sample before the bucket to the last in it).
-- sum, min and max are NULL when they equal what `last` implies (last ×
-- count, last, last): the views coalesce them back.
CREATE TABLE rollup_1m (
    time INTEGER NOT NULL, series_id INTEGER NOT NULL, count INTEGER NOT NULL,
    sum, min, max, last, increase, span,
    PRIMARY KEY (time, series_id)
) WITHOUT ROWID;
CREATE TABLE rollup_5m (
    time INTEGER NOT NULL, series_id INTEGER NOT NULL, count INTEGER NOT NULL,
    sum, min, max, last, increase, span,
    PRIMARY KEY (time, series_id)
) WITHOUT ROWID;
CREATE TABLE rollup_1h (
    time INTEGER NOT NULL, series_id INTEGER NOT NULL, count INTEGER NOT NULL,
    sum, min, max, last, increase, span,
    PRIMARY KEY (time, series_id)
) WITHOUT ROWID;

-- CPU busy % per instance per bucket, from cpu_samples.
CREATE TABLE cpu_rollup_1m (
    time REAL NOT NULL, instance_id TEXT NOT NULL, count INTEGER NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (time, instance_id)
) WITHOUT ROWID;
CREATE TABLE cpu_rollup_5m (
    time REAL NOT NULL, instance_id TEXT NOT NULL, count INTEGER NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (time, instance_id)
) WITHOUT ROWID;
CREATE TABLE cpu_rollup_1h (
    time REAL NOT NULL, instance_id TEXT NOT NULL, count INTEGER NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (time, instance_id)
) WITHOUT ROWID;

-- The recent tier as before, then the compacted tier. The CROSS JOINs fix the
-- join order (SQLite keeps it): metric, its series, the series' instance's
-- frames in the time range (a range search on REAL time), then one seek for
-- the latest point at or before each frame.
DROP VIEW metric_samples;
CREATE VIEW metric_samples AS
SELECT s.time                AS time,
       se.instance_id        AS instance_id,
       m.name                AS metric,
       se.labels             AS labels,
       CAST(s.value AS REAL) AS value
FROM samples s
JOIN metrics m  ON m.metric_id = s.metric_id
JOIN series  se ON se.series_id = s.series_id
UNION ALL
SELECT f.time, se.instance_id, m.name, se.labels, CAST(p.value AS REAL)
FROM metrics m
CROSS JOIN series se
CROSS JOIN frames f
CROSS JOIN points p
WHERE se.metric_id = m.metric_id
  AND f.instance_id = se.instance_id
  AND p.block = f.block AND p.series_id = se.series_id
  AND p.toff = (SELECT max(q.toff) FROM points q
                WHERE q.block = f.block AND q.series_id = se.series_id AND q.toff <= f.toff)
  AND typeof(p.value) <> 'blob';

-- Rollup views: one row per series (or instance) per bucket; `time` is the
-- bucket start. Buckets outermost: the lookups of one bucket hit the same few
-- pages (rows are keyed by bucket, then series), twice as fast as series
-- outermost for one instance and for fifty.
CREATE VIEW metric_samples_1m AS
SELECT b.time AS time, se.instance_id AS instance_id, m.name AS metric, se.labels AS labels,
       CAST(coalesce(r.sum, r.last * r.count) AS REAL) / r.count AS avg,
       CAST(coalesce(r.min, r.last) AS REAL) AS min, CAST(coalesce(r.max, r.last) AS REAL) AS max,
       CAST(r.last AS REAL) AS last,
       CAST(r.increase AS REAL) AS increase, CAST(r.increase AS REAL) / r.span AS rate, r.count AS count
FROM rollup_buckets b
CROSS JOIN metrics m
CROSS JOIN series se
CROSS JOIN rollup_1m r
WHERE se.metric_id = m.metric_id AND b.width = 60
  AND r.time = b.time AND r.series_id = se.series_id;

CREATE VIEW cpu_utilization_1m AS
SELECT c.time AS time, c.instance_id AS instance_id, i.role AS role, i.asg_name AS asg_name,
       c.sum / c.count AS avg, c.min AS min, c.max AS max, c.count AS count
FROM cpu_rollup_1m c
JOIN instances i ON i.instance_id = c.instance_id;

CREATE VIEW metric_samples_5m AS
SELECT b.time AS time, se.instance_id AS instance_id, m.name AS metric, se.labels AS labels,
       CAST(coalesce(r.sum, r.last * r.count) AS REAL) / r.count AS avg,
       CAST(coalesce(r.min, r.last) AS REAL) AS min, CAST(coalesce(r.max, r.last) AS REAL) AS max,
       CAST(r.last AS REAL) AS last,
       CAST(r.increase AS REAL) AS increase, CAST(r.increase AS REAL) / r.span AS rate, r.count AS count
FROM rollup_buckets b
CROSS JOIN metrics m
CROSS JOIN series se
CROSS JOIN rollup_5m r
WHERE se.metric_id = m.metric_id AND b.width = 300
  AND r.time = b.time AND r.series_id = se.series_id;

CREATE VIEW cpu_utilization_5m AS
SELECT c.time AS time, c.instance_id AS instance_id, i.role AS role, i.asg_name AS asg_name,
       c.sum / c.count AS avg, c.min AS min, c.max AS max, c.count AS count
FROM cpu_rollup_5m c
JOIN instances i ON i.instance_id = c.instance_id;

CREATE VIEW metric_samples_1h AS
SELECT b.time AS time, se.instance_id AS instance_id, m.name AS metric, se.labels AS labels,
       CAST(coalesce(r.sum, r.last * r.count) AS REAL) / r.count AS avg,
       CAST(coalesce(r.min, r.last) AS REAL) AS min, CAST(coalesce(r.max, r.last) AS REAL) AS max,
       CAST(r.last AS REAL) AS last,
       CAST(r.increase AS REAL) AS increase, CAST(r.increase AS REAL) / r.span AS rate, r.count AS count
FROM rollup_buckets b
CROSS JOIN metrics m
CROSS JOIN series se
CROSS JOIN rollup_1h r
WHERE se.metric_id = m.metric_id AND b.width = 3600
  AND r.time = b.time AND r.series_id = se.series_id;

CREATE VIEW cpu_utilization_1h AS
SELECT c.time AS time, c.instance_id AS instance_id, i.role AS role, i.asg_name AS asg_name,
       c.sum / c.count AS avg, c.min AS min, c.max AS max, c.count AS count
FROM cpu_rollup_1h c
JOIN instances i ON i.instance_id = c.instance_id;

-- How far back each tier reaches (`oldest`, epoch seconds; NULL when empty):
-- panels choose the finest tier that covers their range (docs/sql.md).
CREATE VIEW storage_tiers AS
SELECT 'raw' AS tier, 0 AS width,
       coalesce((SELECT min(block) * 300.0 FROM points),
                (SELECT min((SELECT min(time) FROM samples s WHERE s.metric_id = m.metric_id)) FROM metrics m)) AS oldest
UNION ALL SELECT '1m', 60, (SELECT min(time) FROM rollup_buckets WHERE width = 60)
UNION ALL SELECT '5m', 300, (SELECT min(time) FROM rollup_buckets WHERE width = 300)
UNION ALL SELECT '1h', 3600, (SELECT min(time) FROM rollup_buckets WHERE width = 3600);

-- The writer loads an instance's series at its first scrape (and forgets them
-- when it leaves), instead of every series ever seen at start.
CREATE INDEX series_by_instance ON series (instance_id);
