-- fleetscrape's own counters (issue #25), written once a minute by `run`, so
-- that alert rules, which read only the database, see what `/metrics` shows.
--   time   epoch seconds of the reading
--   name   the counter's name on /metrics, summed over its labels, e.g.
--          fleetscrape_remote_write_samples_dropped_total (docs/sql.md)
--   value  its value then. Counters start from 0 when fleetscrape starts:
--          read increases reset-aware (a decrease counts the new value),
--          as Prometheus's increase() does.
CREATE TABLE self_metrics (
    time  REAL NOT NULL,
    name  TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (time, name)
) WITHOUT ROWID;
