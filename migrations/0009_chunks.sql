-- Store v3.1 (issue #22): a written block keeps each series as ONE row of
-- `chunks` instead of one row of `points` per change point. Measured at 1,000
-- targets (BENCHMARKS.md, 2026-12-06): a block write inserted ~5 M point rows,
-- each a B-tree seek, ~30 % of fleetscrape's CPU; a chunk is one row per series
-- per block, and its values cost their text (~10 B) instead of a row (~24 B).
--
--   id    block × 2^32 + series_id: one integer key (a rowid seek, rows up to
--         ~4 KB kept in the page where a WITHOUT ROWID table spills at ~1 KB)
--   vals  the series' value at each of its instance's frames of the block, by
--         the frame's `idx` (0, 1, … in time order): a JSON array as in the
--         scrape log (null for NaN, false when the series was absent from that
--         scrape), or, when the series had one value at every frame of the
--         block, that value alone (NULL for NaN).
-- Blocks written before this migration keep their `points` (frames with a NULL
-- `idx`), read as before until retention drops them.
CREATE TABLE chunks (
    id   INTEGER PRIMARY KEY,
    vals
);

ALTER TABLE frames ADD COLUMN idx INTEGER;

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
-- Chunks: the instance's frames in the range, then one rowid seek each; the
-- frame's element of the array (SQLite caches the parse of a row's array).
-- (One CAST around the CASE: every arm's value must have REAL affinity, or
-- SQLite no longer flattens the view into the query and pushes less down.)
SELECT f.time, se.instance_id, m.name, se.labels,
       CAST(CASE WHEN typeof(c.vals) = 'text' THEN json_extract(c.vals, '$[' || f.idx || ']') ELSE c.vals END AS REAL)
FROM metrics m
CROSS JOIN series se
CROSS JOIN frames f
CROSS JOIN chunks c
WHERE se.metric_id = m.metric_id
  AND f.instance_id = se.instance_id AND f.idx IS NOT NULL
  AND c.id = f.block * 4294967296 + se.series_id
  AND (typeof(c.vals) <> 'text' OR json_type(c.vals, '$[' || f.idx || ']') <> 'false')
UNION ALL
-- Points, of blocks written before chunks.
SELECT f.time, se.instance_id, m.name, se.labels, CAST(p.value AS REAL)
FROM metrics m
CROSS JOIN series se
CROSS JOIN frames f
CROSS JOIN points p
WHERE se.metric_id = m.metric_id
  AND f.instance_id = se.instance_id AND f.idx IS NULL
  AND p.block = f.block AND p.series_id = se.series_id
  AND p.toff = (SELECT max(q.toff) FROM points q
                WHERE q.block = f.block AND q.series_id = se.series_id AND q.toff <= f.toff)
  AND typeof(p.value) <> 'blob';

DROP VIEW storage_tiers;
CREATE VIEW storage_tiers AS
SELECT 'raw' AS tier, 0 AS width,
       coalesce((SELECT min(block) * 300.0 FROM points),
                (SELECT (min(id) >> 32) * 300.0 FROM chunks),
                (SELECT min((SELECT min(time) FROM samples s WHERE s.metric_id = m.metric_id)) FROM metrics m),
                (SELECT min(t) FROM (SELECT min(time) AS t FROM scrape_log_0 UNION ALL SELECT min(time) FROM scrape_log_1
                                     UNION ALL SELECT min(time) FROM scrape_log_2))) AS oldest
UNION ALL SELECT '1m', 60, (SELECT min(time) FROM rollup_buckets WHERE width = 60)
UNION ALL SELECT '5m', 300, (SELECT min(time) FROM rollup_buckets WHERE width = 300)
UNION ALL SELECT '1h', 3600, (SELECT min(time) FROM rollup_buckets WHERE width = 3600);
