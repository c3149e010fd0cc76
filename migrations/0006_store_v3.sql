-- Store v3 (docs/storage.md, issue #22): samples are no longer inserted one
-- row each into `samples`, read back and deleted at compaction. Each stored
-- scrape is one row of the scrape log, its values packed in a JSONB array
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
-- no row is ever deleted one by one. `vals` is a JSONB array: element `slot`
-- holds the series' value (JSON null for NaN, `false` when the series was
-- absent from the scrape; arrays are shorter than a series' slot when the
-- series was created after the scrape).
CREATE TABLE scrape_log_0 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals BLOB NOT NULL);
CREATE TABLE scrape_log_1 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals BLOB NOT NULL);
CREATE TABLE scrape_log_2 (time REAL NOT NULL, instance_id TEXT NOT NULL, vals BLOB NOT NULL);
CREATE UNIQUE INDEX scrape_log_0_by_instance ON scrape_log_0 (instance_id, time);
CREATE UNIQUE INDEX scrape_log_1_by_instance ON scrape_log_1 (instance_id, time);
CREATE UNIQUE INDEX scrape_log_2_by_instance ON scrape_log_2 (instance_id, time);

-- metric_samples: the scrape log (the newest minutes), v2's recent tier,
-- then the compacted tier. For the log: metric, its series, the series'
-- instance's log rows in the time range, then the series' element.
DROP VIEW metric_samples;
CREATE VIEW metric_samples AS
SELECT l.time AS time, se.instance_id AS instance_id, m.name AS metric, se.labels AS labels,
       CAST(l.vals ->> se.slot AS REAL) AS value
FROM metrics m CROSS JOIN series se CROSS JOIN scrape_log_0 l
WHERE se.metric_id = m.metric_id AND l.instance_id = se.instance_id AND (l.vals -> se.slot) <> 'false'
UNION ALL
SELECT l.time, se.instance_id, m.name, se.labels, CAST(l.vals ->> se.slot AS REAL)
FROM metrics m CROSS JOIN series se CROSS JOIN scrape_log_1 l
WHERE se.metric_id = m.metric_id AND l.instance_id = se.instance_id AND (l.vals -> se.slot) <> 'false'
UNION ALL
SELECT l.time, se.instance_id, m.name, se.labels, CAST(l.vals ->> se.slot AS REAL)
FROM metrics m CROSS JOIN series se CROSS JOIN scrape_log_2 l
WHERE se.metric_id = m.metric_id AND l.instance_id = se.instance_id AND (l.vals -> se.slot) <> 'false'
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
