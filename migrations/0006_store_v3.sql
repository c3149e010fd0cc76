-- Store v3 (docs/storage.md, issue #22): samples are no longer inserted one
-- row each into `samples`, read back and deleted at compaction. Each stored
-- scrape is one row of the scrape log, its values packed in a JSON array
-- indexed by each series' `slot`; 1-minute rollups are written at ingest,
-- when a series' minute closes; when a 5-minute block ends, its change
-- points, frames and 5-minute rollups are computed from the log and written
-- in key order, and the block's log table is emptied whole. `samples` stays
-- for databases written by v2: its rows are compacted as before.

-- A series' position in its instance's scrape log arrays (0, 1, 2, … per
-- instance, in order of creation). NULL for series of v2 databases until
-- their instance is scraped again.
ALTER TABLE series ADD COLUMN slot INTEGER;

-- The scrape log, one table per block, rotating (block mod 3): a block's
-- table is emptied in the transaction that writes its points and frames, so
-- no row is ever deleted one by one. `vals` is a JSON array: element `slot`
-- holds the series' value (JSON null for NaN, `false` when the series was
-- absent from the scrape; arrays are shorter than a series' slot when the
-- series was created after the scrape).
CREATE TABLE scrape_log_0 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals TEXT NOT NULL);
CREATE TABLE scrape_log_1 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals TEXT NOT NULL);
CREATE TABLE scrape_log_2 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals TEXT NOT NULL);
CREATE UNIQUE INDEX scrape_log_0_by_instance ON scrape_log_0 (instance_id, time);
CREATE UNIQUE INDEX scrape_log_1_by_instance ON scrape_log_1 (instance_id, time);
CREATE UNIQUE INDEX scrape_log_2_by_instance ON scrape_log_2 (instance_id, time);

-- metric_samples: the scrape log (the newest minutes), v2's recent tier,
-- then the compacted tier. For the log: the instance's log rows in the time
-- range (the index), then the metric and the instance's series of it (the
-- unique index), then the series' element: rows outermost, so the array is
-- parsed once per row, not once per series. JSON functions, not `->`:
-- readable by any SQLite since 3.9.
DROP VIEW metric_samples;
CREATE VIEW metric_samples AS
SELECT l.time AS time, se.instance_id AS instance_id, m.name AS metric, se.labels AS labels,
       CAST(json_extract(l.vals, '$[' || se.slot || ']') AS REAL) AS value
FROM scrape_log_0 l CROSS JOIN metrics m CROSS JOIN series se
WHERE se.metric_id = m.metric_id AND se.instance_id = l.instance_id
  AND json_type(l.vals, '$[' || se.slot || ']') <> 'false'
UNION ALL
SELECT l.time, se.instance_id, m.name, se.labels, CAST(json_extract(l.vals, '$[' || se.slot || ']') AS REAL)
FROM scrape_log_1 l CROSS JOIN metrics m CROSS JOIN series se
WHERE se.metric_id = m.metric_id AND se.instance_id = l.instance_id
  AND json_type(l.vals, '$[' || se.slot || ']') <> 'false'
UNION ALL
SELECT l.time, se.instance_id, m.name, se.labels, CAST(json_extract(l.vals, '$[' || se.slot || ']') AS REAL)
FROM scrape_log_2 l CROSS JOIN metrics m CROSS JOIN series se
WHERE se.metric_id = m.metric_id AND se.instance_id = l.instance_id
  AND json_type(l.vals, '$[' || se.slot || ']') <> 'false'
UNION ALL
SELECT s.time, se.instance_id, m.name, se.labels, CAST(s.value AS REAL)
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

DROP VIEW storage_tiers;
CREATE VIEW storage_tiers AS
SELECT 'raw' AS tier, 0 AS width,
       coalesce((SELECT min(block) * 300.0 FROM points),
                (SELECT min((SELECT min(time) FROM samples s WHERE s.metric_id = m.metric_id)) FROM metrics m),
                (SELECT min(t) FROM (SELECT min(time) AS t FROM scrape_log_0 UNION ALL SELECT min(time) FROM scrape_log_1
                                     UNION ALL SELECT min(time) FROM scrape_log_2))) AS oldest
UNION ALL SELECT '1m', 60, (SELECT min(time) FROM rollup_buckets WHERE width = 60)
UNION ALL SELECT '5m', 300, (SELECT min(time) FROM rollup_buckets WHERE width = 300)
UNION ALL SELECT '1h', 3600, (SELECT min(time) FROM rollup_buckets WHERE width = 3600);

-- Per-instance scrape health per 5-minute block, written with the block
-- (issue #22): a 7-day health panel reads 2,016 rows per instance instead of
-- every status row. Keyed by instance first: per-instance panels seek.
CREATE TABLE scrape_status_5m (
    time             REAL NOT NULL,       -- block start
    instance_id      TEXT NOT NULL,
    scrapes          INTEGER NOT NULL,    -- status rows (intervals) in the block
    up               INTEGER NOT NULL,    -- of which up = 1
    duration_seconds REAL NOT NULL,       -- sum of the scrapes' durations
    samples          INTEGER NOT NULL,    -- sum of samples stored
    PRIMARY KEY (instance_id, time)
) WITHOUT ROWID;

CREATE VIEW scrape_health_5m AS
SELECT time, instance_id, scrapes, up, scrapes - up AS failed,
       CAST(up AS REAL) / scrapes AS up_ratio,
       duration_seconds / scrapes AS avg_duration_seconds,
       CAST(samples AS REAL) / scrapes AS avg_samples
FROM scrape_status_5m;
