-- fleetscrape schema. Times are Unix epoch seconds as REAL (millisecond
-- precision), as the Grafana SQLite plugin reads them. The documented SQL
-- interface is the set of views and tables described in docs/sql.md; the
-- storage tables behind metric_samples (metrics, series, samples) may change.

-- Every instance discovery has reported.
CREATE TABLE instances (
    instance_id       TEXT PRIMARY KEY,
    role              TEXT NOT NULL,          -- 'basic' | 'asg'
    asg_name          TEXT,                   -- NULL for basic
    availability_zone TEXT,
    private_ip        TEXT,
    state             TEXT NOT NULL,          -- EC2 state at last_seen
    labels            TEXT NOT NULL DEFAULT '{}', -- target labels kept by relabeling (JSON)
    first_seen        REAL NOT NULL,
    last_seen         REAL NOT NULL
) WITHOUT ROWID;

-- Metric names, interned.
CREATE TABLE metrics (
    metric_id INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    type      TEXT NOT NULL                   -- counter, gauge, histogram, summary, untyped
);

-- One series = one metric of one instance with one set of scraped labels.
CREATE TABLE series (
    series_id   INTEGER PRIMARY KEY,
    metric_id   INTEGER NOT NULL REFERENCES metrics (metric_id),
    instance_id TEXT NOT NULL,
    labels      TEXT NOT NULL,                -- scraped labels as a JSON object, keys sorted
    UNIQUE (metric_id, instance_id, labels)
);

-- Samples, clustered by (metric, time): a scrape round appends to the tail of
-- each metric's range instead of touching one page per series, and a query
-- for one metric over a time range is one key-prefix range scan.
-- `value` has no type affinity on purpose: integral values stay INTEGER
-- (1-8 bytes) instead of 8-byte REAL. NaN is stored as NULL (SQLite has no NaN).
CREATE TABLE samples (
    metric_id INTEGER NOT NULL,
    time      REAL NOT NULL,
    series_id INTEGER NOT NULL,
    value,
    PRIMARY KEY (metric_id, time, series_id)
) WITHOUT ROWID;

CREATE VIEW metric_samples AS
SELECT s.time                AS time,
       se.instance_id        AS instance_id,
       m.name                AS metric,
       se.labels             AS labels,
       CAST(s.value AS REAL) AS value
FROM samples s
JOIN metrics m  ON m.metric_id = s.metric_id
JOIN series  se ON se.series_id = s.series_id;

-- CPU busy % per instance between consecutive scrapes, computed at ingest.
CREATE TABLE cpu_samples (
    time        REAL NOT NULL,
    instance_id TEXT NOT NULL,
    value       REAL NOT NULL,
    PRIMARY KEY (time, instance_id)
) WITHOUT ROWID;

CREATE VIEW cpu_utilization AS
SELECT c.time, c.instance_id, i.role, i.asg_name, c.value
FROM cpu_samples c
JOIN instances i ON i.instance_id = c.instance_id;

-- One row per instance per scrape interval: did it answer, and how.
CREATE TABLE scrape_status (
    time             REAL NOT NULL,
    instance_id      TEXT NOT NULL,
    up               INTEGER NOT NULL,        -- 1 or 0
    reason           TEXT,                    -- why up = 0, e.g. not_reached_via_alb
    error            TEXT,
    duration_seconds REAL NOT NULL,
    samples          INTEGER NOT NULL,
    path             TEXT NOT NULL,           -- 'direct <addr>' or 'via_alb <lb>:<port> <target group>'
    PRIMARY KEY (time, instance_id)
) WITHOUT ROWID;

-- One row per via-ALB round of one target group.
CREATE TABLE alb_rounds (
    time         REAL NOT NULL,
    target_group TEXT NOT NULL,
    members      INTEGER NOT NULL,
    requests     INTEGER NOT NULL,
    reached      INTEGER NOT NULL,
    unattributed INTEGER NOT NULL,
    errors       INTEGER NOT NULL,
    PRIMARY KEY (time, target_group)
) WITHOUT ROWID;

-- Members of each Auto Scaling group, at each discovery refresh.
CREATE TABLE asg_membership (
    time     REAL NOT NULL,
    asg_name TEXT NOT NULL,
    members  INTEGER NOT NULL,
    PRIMARY KEY (time, asg_name)
) WITHOUT ROWID;

-- Membership changes seen by discovery, for dashboard annotations.
CREATE TABLE events (
    time        REAL NOT NULL,
    instance_id TEXT NOT NULL,
    asg_name    TEXT,
    kind        TEXT NOT NULL,                -- launched, joined, left, terminated
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_time ON events (time);
