-- A gauge per instance at the resolution of the panel's range (docs/sql.md,
-- "Long ranges"). Grafana fills in $__from and $__to (epoch milliseconds);
-- replace $metric and $instances (e.g. a multi-value variable, quoted).
-- The finest tier that reaches back to $__from and whose resolution suits the
-- width: raw up to 8 h, 1-minute up to 36 h, 5-minute up to 10 days, 1-hour
-- beyond (about 2,000 points per series at a 15 s interval). A tier "reaches
-- back" when it holds $__from, or holds as far back as any tier does.
WITH
  r (lo, width) AS (SELECT $__from / 1000.0, ($__to - $__from) / 1000.0),
  t (raw, m1, m5, h1) AS (
    SELECT (SELECT oldest FROM storage_tiers WHERE tier = 'raw'), (SELECT oldest FROM storage_tiers WHERE tier = '1m'),
           (SELECT oldest FROM storage_tiers WHERE tier = '5m'), (SELECT oldest FROM storage_tiers WHERE tier = '1h')),
  c (lo, width, raw, m1, m5, h1) AS (
    SELECT lo, width,
           raw IS NOT NULL AND (lo >= raw OR raw <= first), m1 IS NOT NULL AND (lo >= m1 OR m1 <= first),
           m5 IS NOT NULL AND (lo >= m5 OR m5 <= first), h1 IS NOT NULL AND (lo >= h1 OR h1 <= first)
    FROM r, t, (SELECT min(coalesce(raw, 1e18), coalesce(m1, 1e18), coalesce(m5, 1e18), coalesce(h1, 1e18)) + 300 AS first FROM t)),
  tier (name) AS (
    SELECT CASE
      WHEN width <= 8 * 3600 AND raw THEN 'raw'
      WHEN width <= 36 * 3600 AND m1 THEN '1m'
      WHEN width <= 10 * 86400 AND m5 THEN '5m'
      WHEN h1 THEN '1h' WHEN m5 THEN '5m' WHEN m1 THEN '1m' ELSE 'raw' END
    FROM c)
SELECT time, instance_id, value FROM metric_samples
 WHERE (SELECT name FROM tier) = 'raw' AND metric = '$metric' AND instance_id IN ($instances)
   AND time >= $__from / 1000.0 AND time < $__to / 1000.0
UNION ALL
SELECT time, instance_id, avg FROM metric_samples_1m
 WHERE (SELECT name FROM tier) = '1m' AND metric = '$metric' AND instance_id IN ($instances)
   AND time >= $__from / 1000.0 AND time < $__to / 1000.0
UNION ALL
SELECT time, instance_id, avg FROM metric_samples_5m
 WHERE (SELECT name FROM tier) = '5m' AND metric = '$metric' AND instance_id IN ($instances)
   AND time >= $__from / 1000.0 AND time < $__to / 1000.0
UNION ALL
SELECT time, instance_id, avg FROM metric_samples_1h
 WHERE (SELECT name FROM tier) = '1h' AND metric = '$metric' AND instance_id IN ($instances)
   AND time >= $__from / 1000.0 AND time < $__to / 1000.0
ORDER BY time
