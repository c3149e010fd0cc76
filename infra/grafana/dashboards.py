#!/usr/bin/env python3
"""Generates fleetscrape's provisioned Grafana dashboards and alert rules from
one set of SQL builders, so that every panel and rule reads its tier the same way.

    python3 infra/grafana/dashboards.py           # writes infra/grafana/dashboards/*.json and
                                                  # provisioning/alerting/fleetscrape-rules.yml
    python3 infra/grafana/dashboards.py --check   # fails when a file differs from what it would write

The dashboards and rules are checked in (Grafana provisions them as files);
edit this script (or the rules' thresholds, alerting.toml), run it, commit
all. docs/alerting.md explains every rule. docs/grafana.md explains every panel and how to
add one. The SQL follows the plugin's rules (docs/grafana.md, "Writing your
own panel"): epoch-second REAL time, `$__from`/`$__to` in milliseconds, values
cast to REAL, rows ordered by time.
"""

import json
import sys
from pathlib import Path

DS = {"type": "frser-sqlite-datasource", "uid": "fleetscrape-sqlite"}
HERE = Path(__file__).resolve().parent
INSTANCE_UID = "fleetscrape-instance"
FLEET_UID = "fleetscrape-fleet"

RANGE = "time >= $__from / 1000.0 AND time < $__to / 1000.0"
# The newest values of the range: gauges and tables show the state at its end.
def recent(column="time"):
    return f"{column} >= $__to / 1000.0 - 900 AND {column} >= $__from / 1000.0 AND {column} < $__to / 1000.0"


RECENT = recent()
ONE = "instance_id = ${instance_id:singlequote}"

# The finest tier that reaches back to $__from and suits the range's width:
# raw up to 8 h, 1-minute up to 36 h, 5-minute up to 10 days, 1-hour beyond
# (docs/sql.md, "Long ranges"). `b` is the chosen tier's bucket in seconds
# (1 for raw), for tables that have no rollups (scrape_status, alb_rounds).
def tier_cte(raw_up_to="8 * 3600", minute_up_to="36 * 3600"):
    """The CTE that names the range's tier (see TIER); `raw_up_to` and
    `minute_up_to` are the widest ranges, in seconds (SQL expressions), still
    read raw and from the 1-minute rollups."""
    return (TIER_TEMPLATE.replace("width <= 8 * 3600 AND raw", f"width <= {raw_up_to} AND raw")
            .replace("width <= 36 * 3600 AND m1", f"width <= {minute_up_to} AND m1"))


TIER_TEMPLATE = """r (lo, width) AS (SELECT $__from / 1000.0, ($__to - $__from) / 1000.0),
t (raw, m1, m5, h1) AS (SELECT (SELECT oldest FROM storage_tiers WHERE tier = 'raw'), (SELECT oldest FROM storage_tiers WHERE tier = '1m'), (SELECT oldest FROM storage_tiers WHERE tier = '5m'), (SELECT oldest FROM storage_tiers WHERE tier = '1h')),
reach (lo, width, raw, m1, m5, h1) AS (SELECT lo, width, raw IS NOT NULL AND (lo >= raw OR raw <= first), m1 IS NOT NULL AND (lo >= m1 OR m1 <= first), m5 IS NOT NULL AND (lo >= m5 OR m5 <= first), h1 IS NOT NULL AND (lo >= h1 OR h1 <= first) FROM r, t, (SELECT min(coalesce(raw, 1e18), coalesce(m1, 1e18), coalesce(m5, 1e18), coalesce(h1, 1e18)) + 300 AS first FROM t)),
tier (name, b) AS (SELECT name, CASE name WHEN 'raw' THEN 1 WHEN '1m' THEN 60 WHEN '5m' THEN 300 ELSE 3600 END FROM (SELECT CASE WHEN width <= 8 * 3600 AND raw THEN 'raw' WHEN width <= 36 * 3600 AND m1 THEN '1m' WHEN width <= 10 * 86400 AND m5 THEN '5m' WHEN h1 THEN '1h' WHEN m5 THEN '5m' WHEN m1 THEN '1m' ELSE 'raw' END AS name FROM reach))"""
TIER = tier_cte()

ROLLUPS = [("1m", "metric_samples_1m"), ("5m", "metric_samples_5m"), ("1h", "metric_samples_1h")]
CPU_VIEWS = [("raw", "cpu_utilization", "value"), ("1m", "cpu_utilization_1m", "avg"),
             ("5m", "cpu_utilization_5m", "avg"), ("1h", "cpu_utilization_1h", "avg")]


def metric_cond(metrics):
    if isinstance(metrics, str):
        return f"metric = '{metrics}'"
    return "metric IN (" + ", ".join(f"'{m}'" for m in metrics) + ")"


def label(name):
    return f"json_extract(labels, '$.{name}')"


def is_tier(name):
    return f"(SELECT name FROM tier) = '{name}'"


def where(*conds):
    return " AND ".join(c for c in conds if c)


def gauge_arms(metrics, instance=ONE, extra=""):
    """(time, instance_id, metric, labels, v) of a gauge from the chosen tier:
    raw values, or the rollup's bucket averages."""
    cond = metric_cond(metrics)
    arms = [f"SELECT time, instance_id, metric, labels, value AS v FROM metric_samples "
            f"WHERE {where(is_tier('raw'), cond, instance, extra, RANGE)}"]
    for name, view in ROLLUPS:
        arms.append(f"SELECT time, instance_id, metric, labels, avg AS v FROM {view} "
                    f"WHERE {where(is_tier(name), cond, instance, extra, RANGE)}")
    return "\nUNION ALL ".join(arms)


def counter_arms(metrics, kind, instance=ONE, extra=""):
    """(time, instance_id, metric, labels, v) of a counter from the chosen tier.
    kind 'rate': per second; 'delta': the increase. Raw: consecutive samples
    of ONE instance's series (a window function over its rows only), reset-aware
    (a decrease counts the new value); rollups: their reset-aware rate/increase."""
    cond = metric_cond(metrics)
    delta = "CASE WHEN value >= pv THEN value - pv ELSE value END"
    expr = delta if kind == "delta" else f"({delta}) / (time - pt)"
    raw = (f"SELECT time, instance_id, metric, labels, {expr} AS v FROM ("
           f"SELECT time, instance_id, metric, labels, value, lag(value) OVER w AS pv, lag(time) OVER w AS pt "
           f"FROM metric_samples WHERE {where(is_tier('raw'), cond, instance, extra)} "
           f"AND time >= $__from / 1000.0 - 300 AND time < $__to / 1000.0 "
           f"WINDOW w AS (PARTITION BY metric, labels ORDER BY time)) "
           f"WHERE pv IS NOT NULL AND time >= $__from / 1000.0")
    column = "increase" if kind == "delta" else "rate"
    arms = [raw]
    for name, view in ROLLUPS:
        arms.append(f"SELECT time, instance_id, metric, labels, {column} AS v FROM {view} "
                    f"WHERE {where(is_tier(name), cond, instance, extra, RANGE)}")
    return "\nUNION ALL ".join(arms)


def cpu_arms(instance=ONE):
    """(time, instance_id, role, v) of CPU busy % from the chosen tier."""
    arms = []
    for name, view, column in CPU_VIEWS:
        arms.append(f"SELECT time, instance_id, role, {column} AS v FROM {view} "
                    f"WHERE {where(is_tier(name), instance, RANGE)}")
    return "\nUNION ALL ".join(arms)


def with_tier(body, tier=None):
    return f"WITH {tier or TIER}\n{body}"


def series_sql(arms, series, value, name):
    """A long-format time series: one series per `series` expression."""
    return with_tier(f"SELECT time, {series} AS series, CAST({value} AS REAL) AS {name} FROM (\n{arms}\n) ORDER BY time")


def pick(metric, column="v"):
    return f"max(CASE WHEN metric = '{metric}' THEN {column} END)"


# ---------------------------------------------------------------- panels

class Layout:
    def __init__(self):
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.panels = []

    def row(self, title):
        self.newline()
        self.panels.append({"id": self.take_id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def take_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.take_id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def target(sql, fmt, ref="A"):
    return {"refId": ref, "datasource": DS, "queryType": fmt, "timeColumns": ["time"],
            "rawQueryText": sql, "queryText": sql}


def timeseries(title, description, sql, unit, stack=False, legend="${__field.labels.series}", extra=None):
    custom = {"fillOpacity": 10, "lineWidth": 1, "showPoints": "never", "spanNulls": False}
    if stack:
        custom.update({"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60})
    defaults = {"unit": unit, "custom": custom}
    if legend:
        defaults["displayName"] = legend
    panel = {"type": "timeseries", "title": title, "description": description, "datasource": DS,
             "targets": [target(sql, "time series")], "fieldConfig": {"defaults": defaults, "overrides": []},
             "options": {"legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                                    "calcs": ["mean", "lastNotNull", "max"]},
                         "tooltip": {"mode": "multi", "sort": "desc"}}}
    if extra:
        panel.update(extra)
    return panel


def stat(title, description, sql, unit, thresholds=None, kind="gauge", decimals=None):
    steps = [{"color": "green", "value": None}]
    for value, color in (thresholds or []):
        steps.append({"color": color, "value": value})
    defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if decimals is not None:
        defaults["decimals"] = decimals
    if unit == "percent":
        defaults.update({"min": 0, "max": 100})
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^(?!time$).*/", "values": False}}
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "targets": [target(sql, "table")], "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options}


def table(title, description, sql, overrides=None, sort=None):
    panel = {"type": "table", "title": title, "description": description, "datasource": DS,
             "targets": [target(sql, "table")],
             "fieldConfig": {"defaults": {}, "overrides": overrides or []},
             "options": {"showHeader": True}}
    if sort:
        panel["options"]["sortBy"] = [{"displayName": sort, "desc": True}]
    return panel


def unit_override(column, unit, extra=None):
    props = [{"id": "unit", "value": unit}]
    props += extra or []
    return {"matcher": {"id": "byName", "options": column}, "properties": props}


def latest_one(sql_from_where, columns):
    """The newest frame's row of a per-instance aggregate in the range's last 15 minutes."""
    return f"SELECT time, {columns} FROM {sql_from_where} GROUP BY time ORDER BY time DESC LIMIT 1"


# Filesystems the dashboards show: 1860 leaves out the `rootfs` device; tmpfs
# and the other memory-backed types are not disks either.
REAL_FS = f"{label('fstype')} NOT IN ('rootfs', 'tmpfs', 'ramfs', 'devtmpfs', 'overlay', 'squashfs', 'nsfs')"
MEM = ["node_memory_MemTotal_bytes", "node_memory_MemFree_bytes", "node_memory_MemAvailable_bytes",
       "node_memory_Buffers_bytes", "node_memory_Cached_bytes", "node_memory_SReclaimable_bytes"]
SWAP = ["node_memory_SwapTotal_bytes", "node_memory_SwapFree_bytes"]
NET = {"bytes": ("node_network_receive_bytes_total", "node_network_transmit_bytes_total"),
       "packets": ("node_network_receive_packets_total", "node_network_transmit_packets_total"),
       "errs": ("node_network_receive_errs_total", "node_network_transmit_errs_total"),
       "drop": ("node_network_receive_drop_total", "node_network_transmit_drop_total")}
DISK = {"ops": ("node_disk_reads_completed_total", "node_disk_writes_completed_total"),
        "bytes": ("node_disk_read_bytes_total", "node_disk_written_bytes_total")}
# The target group of the instance's latest via-ALB scrape ("via_alb <lb>:<port> <group>").
TARGET_GROUP = ("(SELECT substr(p, instr(p, ' ') + 1) FROM (SELECT substr(path, 9) AS p FROM scrape_status "
                f"WHERE {ONE} AND path LIKE 'via_alb %' AND time < $__to / 1000.0 ORDER BY time DESC LIMIT 1))")


def instance_dashboard():
    L = Layout()
    L.row("Quick CPU / Mem / Disk")
    L.add(table("Instance", "The instance, as discovery last saw it: role (basic or an ASG member), group, zone, "
                "EC2 state.",
                "SELECT last_seen AS time, instance_id, role, coalesce(asg_name, '-') AS asg, availability_zone, "
                f"state, private_ip FROM instances WHERE {ONE} AND first_seen < $__to / 1000.0 AND last_seen >= $__from / 1000.0"), 6, 4)
    L.add(stat("CPU busy", "CPU busy % at the end of the range: 100 × Δ(non-idle CPU seconds) / Δ(all CPU seconds) "
               "between the last two scrapes (docs/sql.md, cpu_utilization).",
               f"SELECT time, CAST(value AS REAL) AS cpu_busy FROM cpu_utilization WHERE {ONE} AND {RECENT} "
               "ORDER BY time DESC LIMIT 1", "percent", [(70, "orange"), (90, "red")]), 3, 4)
    L.add(stat("Sys load (1m / 5m / 15m, % of cores)", "node_load1, node_load5 and node_load15 divided by the "
               "number of CPUs, at the newest scrape.",
               latest_one(f"metric_samples WHERE {where(metric_cond(['node_load1', 'node_load5', 'node_load15', 'node_cpu_seconds_total']), ONE, RECENT)} "
                          f"AND (metric <> 'node_cpu_seconds_total' OR {label('mode')} = 'idle')",
                          f"CAST(100.0 * {pick('node_load1', 'value')} / sum(metric = 'node_cpu_seconds_total') AS REAL) AS load1, "
                          f"CAST(100.0 * {pick('node_load5', 'value')} / sum(metric = 'node_cpu_seconds_total') AS REAL) AS load5, "
                          f"CAST(100.0 * {pick('node_load15', 'value')} / sum(metric = 'node_cpu_seconds_total') AS REAL) AS load15"),
               "percent", [(85, "orange"), (100, "red")], kind="bargauge"), 4, 4)
    L.add(stat("RAM used", "100 × (1 − MemAvailable / MemTotal) at the newest scrape.",
               latest_one(f"metric_samples WHERE {where(metric_cond(['node_memory_MemTotal_bytes', 'node_memory_MemAvailable_bytes']), ONE, RECENT)}",
                          f"CAST(100.0 * (1 - {pick('node_memory_MemAvailable_bytes', 'value')} / {pick('node_memory_MemTotal_bytes', 'value')}) AS REAL) AS ram_used"),
               "percent", [(80, "orange"), (90, "red")]), 3, 4)
    L.add(stat("Swap used", "100 × (SwapTotal − SwapFree) / SwapTotal at the newest scrape; no value without swap.",
               latest_one(f"metric_samples WHERE {where(metric_cond(SWAP), ONE, RECENT)}",
                          f"CAST(100.0 * ({pick('node_memory_SwapTotal_bytes', 'value')} - {pick('node_memory_SwapFree_bytes', 'value')}) / nullif({pick('node_memory_SwapTotal_bytes', 'value')}, 0) AS REAL) AS swap_used"),
               "percent", [(10, "orange"), (25, "red")]), 3, 4)
    L.add(stat("Root FS used", "100 − 100 × avail / size of the filesystem mounted on / (not the rootfs pseudo device).",
               latest_one(f"metric_samples WHERE {where(metric_cond(['node_filesystem_avail_bytes', 'node_filesystem_size_bytes']), ONE, RECENT)} "
                          f"AND {label('mountpoint')} = '/' AND {REAL_FS}",
                          f"CAST(100.0 - 100.0 * {pick('node_filesystem_avail_bytes', 'value')} / {pick('node_filesystem_size_bytes', 'value')} AS REAL) AS root_fs_used"),
               "percent", [(80, "orange"), (90, "red")]), 2, 4)
    L.newline()
    L.add(stat("CPU cores", "CPUs reporting node_cpu_seconds_total at the newest scrape.",
               latest_one(f"metric_samples WHERE {where(metric_cond('node_cpu_seconds_total'), ONE, RECENT)} AND {label('mode')} = 'idle'",
                          "CAST(count(*) AS REAL) AS cores"), "short", kind="stat"), 3, 3)
    L.add(stat("Uptime", "node_time_seconds − node_boot_time_seconds at the newest scrape (the exporter's own clock).",
               latest_one(f"metric_samples WHERE {where(metric_cond(['node_time_seconds', 'node_boot_time_seconds']), ONE, RECENT)}",
                          f"CAST({pick('node_time_seconds', 'value')} - {pick('node_boot_time_seconds', 'value')} AS REAL) AS uptime"),
               "s", kind="stat", decimals=1), 3, 3)
    L.add(stat("RAM total", "MemTotal at the newest scrape.",
               f"SELECT time, CAST(value AS REAL) AS ram_total FROM metric_samples WHERE {where(metric_cond('node_memory_MemTotal_bytes'), ONE, RECENT)} ORDER BY time DESC LIMIT 1",
               "bytes", kind="stat"), 3, 3)
    L.add(stat("Scrape", "The newest scrape of the instance: 1 when a payload was stored.",
               f"SELECT time, CAST(up AS REAL) AS up FROM scrape_status WHERE {ONE} AND {RECENT} ORDER BY time DESC LIMIT 1",
               "short", [(1, "green")], kind="stat"), 3, 3)

    L.row("CPU")
    L.add(timeseries("CPU busy %", "cpu_utilization of this instance from the range's tier.",
                     series_sql(cpu_arms(), "'busy'", "v", "cpu_busy"), "percent"), 12, 8)
    L.add(timeseries("CPU by mode", "Share of all CPU time per mode, stacked to 100 %: Δ(mode's seconds over every "
                     "CPU) / Δ(all modes' seconds), both from the same scrapes, so request timing does not enter "
                     "(1860's CPU Basic divides by wall-clock time instead).",
                     with_tier("SELECT time, mode AS series, CAST(100.0 * d / sum(d) OVER (PARTITION BY time) AS REAL) AS share FROM ("
                               f"SELECT time, {label('mode')} AS mode, sum(v) AS d FROM (\n{counter_arms('node_cpu_seconds_total', 'delta')}\n) GROUP BY time, mode) "
                               "ORDER BY time, CASE mode WHEN 'idle' THEN 9 ELSE 0 END, mode"),
                     "percent", stack=True), 12, 8)
    L.add(timeseries("System load", "node_load1, node_load5, node_load15 (absolute) from the range's tier.",
                     series_sql(gauge_arms(["node_load1", "node_load5", "node_load15"]), "substr(metric, 6)", "v", "load"),
                     "short"), 12, 8)
    L.add(timeseries("Context switches and interrupts", "Per second, from node_context_switches_total and node_intr_total.",
                     series_sql(counter_arms(["node_context_switches_total", "node_intr_total"], "rate"),
                                "CASE metric WHEN 'node_intr_total' THEN 'interrupts' ELSE 'context switches' END", "v", "per_second"),
                     "ops"), 12, 8)

    L.row("Memory")
    L.add(timeseries("Memory basic", "Total, used (total − free − buffers − cache − SReclaimable, as 1860), "
                     "buffers + cache, available, free, from the range's tier.",
                     with_tier("SELECT time, " +
                               f"CAST({pick('node_memory_MemTotal_bytes')} AS REAL) AS total, "
                               f"CAST({pick('node_memory_MemTotal_bytes')} - {pick('node_memory_MemFree_bytes')} - {pick('node_memory_Buffers_bytes')} - {pick('node_memory_Cached_bytes')} - coalesce({pick('node_memory_SReclaimable_bytes')}, 0) AS REAL) AS used, "
                               f"CAST({pick('node_memory_Buffers_bytes')} + {pick('node_memory_Cached_bytes')} + coalesce({pick('node_memory_SReclaimable_bytes')}, 0) AS REAL) AS buffers_cache, "
                               f"CAST({pick('node_memory_MemAvailable_bytes')} AS REAL) AS available, "
                               f"CAST({pick('node_memory_MemFree_bytes')} AS REAL) AS free "
                               f"FROM (\n{gauge_arms(MEM)}\n) GROUP BY time ORDER BY time"),
                     "bytes", legend=None), 12, 8)
    L.add(timeseries("Swap", "SwapTotal and used (SwapTotal − SwapFree).",
                     with_tier(f"SELECT time, CAST({pick('node_memory_SwapTotal_bytes')} AS REAL) AS swap_total, "
                               f"CAST({pick('node_memory_SwapTotal_bytes')} - {pick('node_memory_SwapFree_bytes')} AS REAL) AS swap_used "
                               f"FROM (\n{gauge_arms(SWAP)}\n) GROUP BY time ORDER BY time"),
                     "bytes", legend=None), 12, 8)

    L.row("Network")
    for key, title, unit in [("bytes", "Network traffic (bytes/s)", "Bps"), ("packets", "Network packets/s", "pps"),
                             ("errs", "Network errors/s", "pps"), ("drop", "Network drops/s", "pps")]:
        metrics = NET[key]
        L.add(timeseries(title, f"Per device, receive and transmit: the rate of {metrics[0]} and {metrics[1]} "
                         "from the range's tier (raw: between consecutive scrapes of this instance).",
                         series_sql(counter_arms(list(metrics), "rate"),
                                    f"{label('device')} || CASE WHEN metric LIKE '%receive%' THEN ' receive' ELSE ' transmit' END",
                                    "v", "rate"), unit), 12, 8)

    L.row("Disk")
    L.add(timeseries("Disk IOPS", "Reads and writes completed per second, per device.",
                     series_sql(counter_arms(list(DISK["ops"]), "rate"),
                                f"{label('device')} || CASE WHEN metric LIKE '%read%' THEN ' read' ELSE ' write' END",
                                "v", "iops"), "iops"), 8, 8)
    L.add(timeseries("Disk throughput", "Bytes read and written per second, per device.",
                     series_sql(counter_arms(list(DISK["bytes"]), "rate"),
                                f"{label('device')} || CASE WHEN metric LIKE '%read%' THEN ' read' ELSE ' write' END",
                                "v", "throughput"), "Bps"), 8, 8)
    L.add(timeseries("Disk I/O busy", "Time spent doing I/O, % of wall-clock time (rate of node_disk_io_time_seconds_total).",
                     series_sql(counter_arms("node_disk_io_time_seconds_total", "rate"), label("device"), "100.0 * v", "busy"),
                     "percent"), 8, 8)

    L.row("Filesystem")
    fs = ["node_filesystem_size_bytes", "node_filesystem_avail_bytes"]
    L.add(table("Filesystems", "Per mount point at the newest scrape: size, available (to non-root users), used % "
                "(100 − 100 × avail / size). Pseudo filesystems (rootfs, tmpfs, ...) left out.",
                "SELECT time, " + label("mountpoint") + " AS mountpoint, " + label("device") + " AS device, " + label("fstype") + " AS fstype, "
                f"CAST({pick('node_filesystem_size_bytes', 'value')} AS REAL) AS size, "
                f"CAST({pick('node_filesystem_avail_bytes', 'value')} AS REAL) AS avail, "
                f"CAST(100.0 - 100.0 * {pick('node_filesystem_avail_bytes', 'value')} / {pick('node_filesystem_size_bytes', 'value')} AS REAL) AS used_pct "
                f"FROM metric_samples WHERE {where(metric_cond(fs), ONE, RECENT, REAL_FS)} "
                f"AND time = (SELECT max(time) FROM metric_samples WHERE {where(metric_cond('node_filesystem_size_bytes'), ONE, RECENT)}) "
                "GROUP BY time, labels ORDER BY mountpoint",
                [unit_override("size", "bytes"), unit_override("avail", "bytes"), unit_override("used_pct", "percent")]), 8, 8)
    L.add(timeseries("Filesystem used %", "100 − 100 × avail / size per mount point, from the range's tier.",
                     with_tier(f"SELECT time, {label('mountpoint')} AS series, "
                               f"CAST(100.0 - 100.0 * {pick('node_filesystem_avail_bytes')} / {pick('node_filesystem_size_bytes')} AS REAL) AS used "
                               f"FROM (\n{gauge_arms(fs, extra=REAL_FS)}\n) GROUP BY time, labels ORDER BY time"),
                     "percent"), 8, 8)
    L.add(timeseries("Filesystem available", "node_filesystem_avail_bytes per mount point.",
                     series_sql(gauge_arms("node_filesystem_avail_bytes", extra=REAL_FS), label("mountpoint"), "v", "avail"),
                     "bytes"), 8, 8)

    L.row("Scrape health")
    bucket = bucket_expr()
    L.add(timeseries("Up", "Share of scrape intervals in which a payload of this instance was stored, and of those "
                     "in which the balancer never sent a request to it (not_reached_via_alb: a gap, not a failure).",
                     with_tier(f"SELECT {bucket} AS time, CAST(avg(up) AS REAL) AS up, "
                               "CAST(avg(reason = 'not_reached_via_alb') AS REAL) AS not_reached "
                               f"FROM scrape_status WHERE {ONE} AND {RANGE} GROUP BY 1 ORDER BY 1"),
                     "percentunit", legend=None), 8, 8)
    L.add(table("Last scrape", "The newest scrape_status row: up, why not (reason, error), the path "
                "(direct <address> or via_alb <lb>:<port> <target group>) and its duration.",
                "SELECT time, up, coalesce(reason, '') AS reason, coalesce(error, '') AS error, path, "
                f"CAST(duration_seconds AS REAL) AS duration_seconds, samples FROM scrape_status WHERE {ONE} AND {RANGE} "
                "ORDER BY time DESC LIMIT 1", [unit_override("time", "dateTimeAsIso"), unit_override("duration_seconds", "s")]), 16, 4)
    L.add(timeseries("Scrape duration", "Seconds per scrape: the request (direct) or its via-ALB round.",
                     with_tier(f"SELECT {bucket} AS time, CAST(avg(duration_seconds) AS REAL) AS duration, "
                               "CAST(max(duration_seconds) AS REAL) AS slowest "
                               f"FROM scrape_status WHERE {ONE} AND {RANGE} GROUP BY 1 ORDER BY 1"),
                     "s", legend=None), 8, 4)
    L.add(timeseries("Samples per scrape", "Samples stored from each payload.",
                     with_tier(f"SELECT {bucket} AS time, CAST(avg(samples) AS REAL) AS samples "
                               f"FROM scrape_status WHERE {ONE} AND up = 1 AND {RANGE} GROUP BY 1 ORDER BY 1"),
                     "short", legend=None), 8, 4)
    L.newline()
    L.add(timeseries("Coverage of its target group", "alb_rounds of the target group this instance was last "
                     "scraped through: coverage (reached_wanted / wanted) and requests per member; empty for a "
                     "directly scraped instance.",
                     with_tier(f"SELECT {bucket} AS time, CAST(1.0 * sum(reached_wanted) / nullif(sum(wanted), 0) AS REAL) AS coverage, "
                               "CAST(1.0 * sum(requests) / nullif(sum(wanted), 0) AS REAL) AS requests_per_member "
                               f"FROM alb_rounds WHERE target_group = {TARGET_GROUP} AND {RANGE} GROUP BY 1 ORDER BY 1"),
                     "percentunit", legend=None,
                     extra={"fieldConfig": {"defaults": {"unit": "percentunit", "custom": {"fillOpacity": 10}},
                                            "overrides": [unit_override("requests_per_member", "short")]}}), 24, 7)

    annotations = [BUILTIN_ANNOTATION, {
        "name": "This instance's events", "datasource": DS, "enable": True, "iconColor": "orange",
        "target": target("SELECT time, instance_id || ' ' || kind || coalesce(' (' || asg_name || ')', '') AS text, "
                         f"kind AS tags FROM events WHERE {ONE} AND {RANGE} ORDER BY time", "table", "Anno")}]
    variables = [{
        "name": "instance_id", "label": "Instance", "type": "query", "datasource": DS, "refresh": 2,
        "multi": False, "includeAll": False, "sort": 0,
        "query": {"refId": "instance_id", "queryType": "table", "timeColumns": [],
                  "rawQueryText": INSTANCE_VARIABLE, "queryText": INSTANCE_VARIABLE},
        "definition": INSTANCE_VARIABLE}]
    return dashboard(INSTANCE_UID, "fleetscrape — instance (Node Exporter Full)", L.panels, variables, annotations,
                     [{"title": "Fleet overview", "type": "link", "url": f"/d/{FLEET_UID}/fleetscrape-fleet?${{__url_time_range}}",
                       "icon": "dashboard"}])


INSTANCE_VARIABLE = ("SELECT instance_id || ' (' || role || coalesce(' ' || asg_name, '') || ', ' || state || ')' AS __text, "
                     "instance_id AS __value FROM instances ORDER BY state <> 'running', role, asg_name, instance_id")
BUILTIN_ANNOTATION = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                      "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                      "type": "dashboard"}


def fleet_dashboard():
    L = Layout()
    every = "instance_id IN (${instance_id:singlequote})"
    link = [{"title": "Open ${__value.raw}", "url": f"/d/{INSTANCE_UID}/fleetscrape-instance?var-instance_id=${{__value.raw}}&${{__url_time_range}}"}]
    L.row("CPU")
    L.add(table("Instances by current CPU", "Each instance's CPU busy % at its newest scrape in the range's last 15 "
                "minutes, busiest first; click an instance for its own dashboard.",
                "SELECT c.time, c.instance_id, i.role, coalesce(i.asg_name, '-') AS asg, CAST(c.value AS REAL) AS cpu_busy "
                "FROM cpu_utilization c JOIN instances i ON i.instance_id = c.instance_id "
                f"WHERE c.{every} AND {recent('c.time')} "
                "AND c.time = (SELECT max(time) FROM cpu_utilization l WHERE l.instance_id = c.instance_id "
                f"AND {recent('l.time')}) "
                "ORDER BY c.value DESC",
                [unit_override("cpu_busy", "percent", [{"id": "custom.cellOptions", "value": {"type": "color-background"}}]),
                 unit_override("time", "dateTimeAsIso"),
                 {"matcher": {"id": "byName", "options": "instance_id"}, "properties": [{"id": "links", "value": link}]}],
                sort="cpu_busy"), 10, 10)
    L.add(timeseries("CPU busy % per instance", "cpu_utilization of every selected instance from the range's tier: "
                     "every ASG member on its own line, legend `instance (role)`.",
                     series_sql(cpu_arms(every), "instance_id || ' (' || role || ')'", "v", "cpu_busy"), "percent",
                     extra={"fieldConfig": {"defaults": {"unit": "percent", "displayName": "${__field.labels.series}",
                                                         "links": [{"title": "Open instance", "url": f"/d/{INSTANCE_UID}/fleetscrape-instance?var-instance_id=${{__field.labels.series}}&${{__url_time_range}}"}]},
                                            "overrides": []}}), 14, 10)
    L.add(timeseries("Basic vs ASG members: average CPU", "The mean CPU busy % of the Basic instances and of each "
                     "group's members.",
                     with_tier(f"SELECT {bucket_expr(60, 'x.time')} AS time, CASE x.role WHEN 'asg' THEN 'asg ' || coalesce(i.asg_name, '?') ELSE 'basic' END AS series, "
                               "CAST(avg(x.v) AS REAL) AS cpu_busy FROM (\n" + cpu_arms(every) + "\n) x "
                               "LEFT JOIN instances i ON i.instance_id = x.instance_id GROUP BY 1, 2 ORDER BY 1"),
                     "percent"), 12, 8)
    L.add(timeseries("ASG average CPU vs target", "The mean CPU busy % of each group's members (≈ CloudWatch "
                     "ASGAverageCPUUtilization, which drives the policy) against the target-tracking target "
                     "discovery read (DescribePolicies).",
                     with_tier("SELECT time, series, CAST(v AS REAL) AS cpu FROM ("
                               "SELECT time, 'average ' || asg_name AS series, v FROM ("
                               "SELECT " + bucket_expr(60, "x.time") + " AS time, i.asg_name, avg(x.v) AS v FROM (\n" + cpu_arms(every) + "\n) x "
                               "JOIN instances i ON i.instance_id = x.instance_id WHERE x.role = 'asg' GROUP BY 1, i.asg_name) "
                               "UNION ALL SELECT " + bucket_expr(60) + " AS time, 'target ' || asg_name, max(target_value) "
                               f"FROM asg_membership WHERE {RANGE} AND target_value IS NOT NULL GROUP BY 1, asg_name) "
                               "ORDER BY time"),
                     "percent"), 12, 8)
    L.row("Auto Scaling")
    L.add(timeseries("ASG size", "InService members, desired capacity, min and max of each group at each discovery "
                     "refresh (DescribeAutoScalingGroups).",
                     with_tier(f"SELECT time, series, CAST(v AS REAL) AS size FROM ("
                               f"SELECT {bucket_expr()} AS time, asg_name || ' members' AS series, avg(members) AS v FROM asg_membership WHERE {RANGE} GROUP BY 1, asg_name "
                               f"UNION ALL SELECT {bucket_expr()}, asg_name || ' desired', max(desired_capacity) FROM asg_membership WHERE {RANGE} AND desired_capacity IS NOT NULL GROUP BY 1, asg_name "
                               f"UNION ALL SELECT {bucket_expr()}, asg_name || ' min', min(min_size) FROM asg_membership WHERE {RANGE} AND min_size IS NOT NULL GROUP BY 1, asg_name "
                               f"UNION ALL SELECT {bucket_expr()}, asg_name || ' max', max(max_size) FROM asg_membership WHERE {RANGE} AND max_size IS NOT NULL GROUP BY 1, asg_name) "
                               "ORDER BY time"),
                     "short"), 12, 8)
    L.add(table("ASG now", "Each group's newest refresh: members, capacity, and its target-tracking policy.",
                "SELECT time, asg_name, members, desired_capacity, min_size, max_size, coalesce(target_metric, '-') AS target_metric, "
                f"CAST(target_value AS REAL) AS target_value FROM asg_membership a WHERE {RANGE} AND time = "
                f"(SELECT max(time) FROM asg_membership b WHERE b.asg_name = a.asg_name AND {RANGE}) ORDER BY asg_name",
                [unit_override("time", "dateTimeAsIso")]), 12, 8)
    L.row("Reachability")
    L.add(table("Not reached now", "Instances whose newest scrape in the range's last 15 minutes stored nothing, with "
                "why (reason, error) and how they are reached (path). Empty when every instance is up.",
                "SELECT s.time, s.instance_id, i.role, coalesce(i.asg_name, '-') AS asg, s.reason, coalesce(s.error, '') AS error, s.path "
                "FROM scrape_status s JOIN instances i ON i.instance_id = s.instance_id "
                f"WHERE s.{every} AND s.up = 0 AND {recent('s.time')} "
                "AND s.time = (SELECT max(time) FROM scrape_status l WHERE l.instance_id = s.instance_id "
                f"AND {recent('l.time')}) ORDER BY s.instance_id",
                [unit_override("time", "dateTimeAsIso"),
                 {"matcher": {"id": "byName", "options": "instance_id"}, "properties": [{"id": "links", "value": link}]}]), 12, 8)
    L.add(timeseries("Failed intervals per instance", "Scrape intervals that stored nothing, per instance and "
                     "reason, per bucket (not_reached_via_alb is a gap: the balancer sent the round's requests to "
                     "other members). Reads only the failed rows (a partial index), so a healthy fleet costs nothing; "
                     "empty when every interval stored a payload.",
                     with_tier(f"SELECT {bucket_expr()} AS time, instance_id || ' ' || coalesce(reason, '?') AS series, "
                               "CAST(count(*) AS REAL) AS failed "
                               # INDEXED BY: with a few instances selected, SQLite would
                               # otherwise seek each one's every row (scrape_status_by_instance).
                               f"FROM scrape_status INDEXED BY scrape_status_failed WHERE up = 0 AND {every} AND {RANGE} GROUP BY 1, 2 ORDER BY 1"),
                     "short", extra={"fieldConfig": {"defaults": {"unit": "short", "displayName": "${__field.labels.series}",
                                                              "custom": {"drawStyle": "bars", "fillOpacity": 80}},
                                                 "overrides": []}}), 12, 8)
    L.add(timeseries("Via-ALB coverage per target group", "alb_rounds: coverage (reached_wanted / wanted) of each "
                     "target group's rounds.",
                     with_tier(f"SELECT {bucket_expr()} AS time, target_group AS series, "
                               "CAST(1.0 * sum(reached_wanted) / nullif(sum(wanted), 0) AS REAL) AS coverage "
                               f"FROM alb_rounds WHERE {RANGE} GROUP BY 1, 2 ORDER BY 1"),
                     "percentunit"), 12, 8)
    L.add(timeseries("Via-ALB price and losses", "Requests per member per interval (requests / wanted), payloads "
                     "that could not be attributed (dropped, never stored as a guess), requests abandoned at a "
                     "round's deadline.",
                     with_tier(f"SELECT {bucket_expr()} AS time, target_group AS series, "
                               "CAST(1.0 * sum(requests) / nullif(sum(wanted), 0) AS REAL) AS requests_per_member, "
                               "CAST(sum(unattributed) AS REAL) AS unattributed, CAST(sum(abandoned) AS REAL) AS abandoned "
                               f"FROM alb_rounds WHERE {RANGE} GROUP BY 1, 2 ORDER BY 1"),
                     "short", legend="${__field.labels.series} ${__field.name}"), 12, 8)
    L.add(table("fleetscrape status: discovery and store", "The daemon's own parts: the last discovery refresh and "
                "the last flush, how long since each last succeeded, and the error when one failed.",
                "SELECT component, CASE WHEN ok = 1 THEN 'ok' ELSE 'failing' END AS state, "
                "CAST($__to / 1000.0 - last_ok AS REAL) AS seconds_since_success, coalesce(error, '') AS error, "
                "checked AS time FROM component_status ORDER BY component",
                [unit_override("seconds_since_success", "s"), unit_override("time", "dateTimeAsIso")]), 24, 5)

    annotations = [BUILTIN_ANNOTATION, {
        "name": "Scale-out and scale-in", "datasource": DS, "enable": True, "iconColor": "orange",
        "target": target("SELECT time, instance_id || ' ' || kind || coalesce(' (' || asg_name || ')', '') AS text, "
                         f"kind AS tags FROM events WHERE {RANGE} ORDER BY time", "table", "Anno")}]
    variables = []
    for name, lab, sql in [
            ("role", "Role", "SELECT DISTINCT role FROM instances ORDER BY 1"),
            ("asg_name", "ASG", "SELECT DISTINCT coalesce(asg_name, '-') FROM instances ORDER BY 1"),
            ("instance_id", "Instance", "SELECT instance_id FROM instances WHERE role IN (${role:singlequote}) "
                                        "AND coalesce(asg_name, '-') IN (${asg_name:singlequote}) ORDER BY 1")]:
        variables.append({"name": name, "label": lab, "type": "query", "datasource": DS, "refresh": 2, "multi": True,
                          "includeAll": True, "sort": 1,
                          "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                          "query": {"refId": name, "queryType": "table", "timeColumns": [], "rawQueryText": sql,
                                    "queryText": sql},
                          "definition": sql})
    return dashboard(FLEET_UID, "fleetscrape — fleet overview", L.panels, variables, annotations,
                     [{"title": "Instance", "type": "link", "url": f"/d/{INSTANCE_UID}/fleetscrape-instance?${{__url_time_range}}",
                       "icon": "dashboard"}])


def bucket_expr(at_least=1, column="time"):
    """The chosen tier's bucket of `column`; `at_least` puts raw rows of
    different instances (scraped at different instants) on a common grid."""
    b = "(SELECT b FROM tier)" if at_least <= 1 else f"(SELECT max(b, {at_least}) FROM tier)"
    return f"cast({column} / {b} as int) * {b}"


def dashboard(uid, title, panels, variables, annotations, links):
    return {"uid": uid, "title": title, "tags": ["fleetscrape"], "timezone": "browser", "schemaVersion": 39,
            "version": 1, "editable": False, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "links": links, "annotations": {"list": annotations}, "templating": {"list": variables},
            "panels": panels}


# ---------------------------------------------------------------- alert rules
#
# Grafana's unified alerting runs each rule's query through the plugin with
# only $__from/$__to replaced (epoch ms of the rule's relativeTimeRange), and
# reads a table of string columns plus one number as one series per row,
# labelled by the strings. So every query returns one row per instance (or
# group, or filesystem) that could fire, with a non-firing value for the
# rest, and one threshold expression decides. docs/alerting.md.

ALERT_TOML = HERE / "alerting.toml"
RULES_FILE = HERE / "provisioning" / "alerting" / "fleetscrape-rules.yml"
NOTIFICATIONS_FILE = HERE / "alerting" / "notifications.example.yml"
# Alert windows are short: raw up to an hour, then the 1-minute tier (36 h),
# 5-minute (10 days), 1-hour (docs/alerting.md, "Which tier a rule reads").
ALERT_TIER = tier_cte("3600")
# Hours-long trends: the 5-minute rollups past 3 hours (72 points per series
# over 6 h instead of 360: 5× less to read at every evaluation).
TREND_TIER = tier_cte("3600", "3 * 3600")
INSTANCE_LABELS = "x.instance_id, i.role, coalesce(i.asg_name, '-') AS asg_name"
RUNNING = "JOIN instances i ON i.instance_id = x.instance_id AND i.state = 'running'"


def range_of(column="time"):
    return f"{column} >= $__from / 1000.0 AND {column} < $__to / 1000.0"


def newest_membership():
    """Each group's newest asg_membership row of the range."""
    return ("SELECT asg_name, desired_capacity, max_size, target_metric, target_value FROM asg_membership a "
            f"WHERE {range_of('a.time')} AND a.time = (SELECT max(b.time) FROM asg_membership b "
            f"WHERE b.asg_name = a.asg_name AND {range_of('b.time')})")


def cpu_busy_sql(c):
    need = max(int(c["minutes"]) - 1, 1)
    return with_tier(
        f"SELECT {INSTANCE_LABELS}, CAST(CASE WHEN count(*) >= {need} THEN min(x.v) ELSE 0 END AS REAL) AS cpu_busy FROM (\n"
        f"SELECT instance_id, cast(time / 60 as int) AS minute, avg(v) AS v FROM (\n{cpu_arms(instance='')}\n) "
        f"GROUP BY instance_id, minute) x\n{RUNNING} GROUP BY x.instance_id ORDER BY x.instance_id", ALERT_TIER)


def asg_at_ceiling_sql(c):
    target = (f"CASE WHEN g.target_metric = 'ASGAverageCPUUtilization' AND g.target_value IS NOT NULL "
              f"THEN g.target_value ELSE {float(c['default_target_percent'])} END")
    return with_tier(
        f"SELECT g.asg_name, CAST(CASE WHEN g.desired_capacity >= g.max_size AND m.cpu > {target} "
        f"THEN m.cpu ELSE 0 END AS REAL) AS members_cpu FROM ({newest_membership()}) g\n"
        "LEFT JOIN (SELECT i.asg_name, avg(x.v) AS cpu FROM (\n" + cpu_arms(instance="role = 'asg'") +
        "\n) x JOIN instances i ON i.instance_id = x.instance_id GROUP BY i.asg_name) m ON m.asg_name = g.asg_name "
        "ORDER BY g.asg_name", ALERT_TIER)


def asg_capacity_sql(c):
    return (f"SELECT g.asg_name, CAST(max(coalesce(g.desired_capacity, 0) - coalesce(r.reached, 0), 0) AS REAL) AS missing "
            f"FROM ({newest_membership()}) g\n"
            "LEFT JOIN (SELECT i.asg_name, count(DISTINCT s.instance_id) AS reached FROM scrape_status s "
            "JOIN instances i ON i.instance_id = s.instance_id AND i.state = 'running' AND i.role = 'asg' "
            f"WHERE s.up = 1 AND {range_of('s.time')} GROUP BY i.asg_name) r ON r.asg_name = g.asg_name "
            "ORDER BY g.asg_name")


def member_unreachable_sql(c):
    # The intervals that stored nothing since the instance's last stored one
    # (all of the range's when none): consecutive failures at the range's end.
    return (f"SELECT {INSTANCE_LABELS}, coalesce((SELECT n.reason FROM scrape_status n WHERE n.instance_id = x.instance_id "
            f"AND n.up = 0 AND {range_of('n.time')} ORDER BY n.time DESC LIMIT 1), '-') AS reason, "
            "CAST(sum(x.up = 0 AND x.time > coalesce(x.last_up, 0)) AS REAL) AS failed_intervals FROM ("
            "SELECT s.instance_id, s.time, s.up, max(CASE WHEN s.up = 1 THEN s.time END) OVER (PARTITION BY s.instance_id) AS last_up "
            f"FROM scrape_status s WHERE {range_of('s.time')}) x\n{RUNNING} GROUP BY x.instance_id ORDER BY x.instance_id")


def memory_low_sql(c):
    avail, total = "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"
    return with_tier(
        f"SELECT {INSTANCE_LABELS}, CAST(100.0 * {pick(avail)} / {pick(total)} AS REAL) AS available_percent FROM ("
        f"SELECT instance_id, metric, avg(v) AS v FROM (\n{gauge_arms([avail, total], instance='')}\n) GROUP BY instance_id, metric) x\n"
        f"{RUNNING} GROUP BY x.instance_id HAVING {pick(total)} > 0 ORDER BY x.instance_id", ALERT_TIER)


def fs_filter(c):
    cond = f"{label('fstype')} <> '' AND {label('mountpoint')} <> ''"
    if c["exclude_fstypes"]:
        cond += f" AND {label('fstype')} NOT IN (" + ", ".join(f"'{t}'" for t in c["exclude_fstypes"]) + ")"
    return cond


def x_label(name):
    # `instances` has a `labels` column too: the series' labels are x's.
    return f"json_extract(x.labels, '$.{name}')"


FS_LABELS = (f"{INSTANCE_LABELS}, coalesce({x_label('device')}, '') AS device, "
             f"coalesce({x_label('mountpoint')}, '') AS mountpoint, coalesce({x_label('fstype')}, '') AS fstype")


def fs_newest(free, total, c):
    """Per filesystem: the newest free and total of the range, whether it is
    read-only, and the points of `free` (t from the range's start, v)."""
    metrics = [free, total, "node_filesystem_readonly"]
    return (f"SELECT instance_id, metric, labels, time - $__from / 1000.0 AS t, v, "
            "row_number() OVER (PARTITION BY instance_id, metric, labels ORDER BY time DESC) AS newest FROM (\n"
            f"{gauge_arms(metrics, instance='', extra=fs_filter(c))}\n)")


def least_squares_slope(avg, t, v):
    """The slope of the least-squares line of `v` over `t` (as PromQL's
    deriv()), from the averages `avg(expr)` builds."""
    return (f"({avg(f'{t} * {v}')} - {avg(t)} * {avg(v)}) / nullif({avg(f'{t} * {t}')} - {avg(t)} * {avg(t)}, 0)")


def fs_sql(c, free, total, horizon_hours):
    """The available percent of each filesystem when it fires (read-write and,
    with a horizon, its least-squares trend of `free` over the range reaching
    zero within the horizon, as predict_linear); 100 otherwise."""
    trend = ""
    if horizon_hours:
        # The least-squares line through the points of `free`, at the range's end + horizon.
        def avg(expr):
            return f"avg(CASE WHEN x.metric = '{free}' THEN {expr} END)"
        horizon = float(horizon_hours) * 3600
        trend = (f" AND ({avg('x.v')} + {least_squares_slope(avg, 'x.t', 'x.v')} "
                 f"* (($__to - $__from) / 1000.0 + {horizon} - {avg('x.t')})) < 0")
    now_free = f"max(CASE WHEN x.metric = '{free}' AND x.newest = 1 THEN x.v END)"
    now_total = f"max(CASE WHEN x.metric = '{total}' AND x.newest = 1 THEN x.v END)"
    readonly = "coalesce(max(CASE WHEN x.metric = 'node_filesystem_readonly' AND x.newest = 1 THEN x.v END), 0)"
    percent = f"100.0 * {now_free} / {now_total}"
    return with_tier(
        f"SELECT {FS_LABELS}, CAST(CASE WHEN {readonly} = 0{trend} THEN {percent} ELSE 100 END AS REAL) AS available_percent "
        f"FROM ({fs_newest(free, total, c)}) x\n{RUNNING} GROUP BY x.instance_id, x.labels HAVING {now_total} > 0 "
        "ORDER BY x.instance_id, mountpoint", TREND_TIER if horizon_hours else ALERT_TIER)


def clock_skew_sql(c):
    off = "node_timex_offset_seconds"
    skew = float(c["skew_seconds"])
    slope = least_squares_slope(lambda expr: f"avg({expr})", "t", "v")
    return with_tier(
        f"SELECT {INSTANCE_LABELS}, CAST(CASE WHEN (x.now > {skew} AND coalesce(x.slope, 0) >= 0) "
        f"OR (x.now < -{skew} AND coalesce(x.slope, 0) <= 0) THEN abs(x.now) ELSE 0 END AS REAL) AS offset_seconds FROM ("
        f"SELECT instance_id, max(CASE WHEN newest = 1 THEN v END) AS now, {slope} AS slope FROM ("
        "SELECT instance_id, time - $__from / 1000.0 AS t, v, row_number() OVER (PARTITION BY instance_id ORDER BY time DESC) AS newest "
        f"FROM (\n{gauge_arms(off, instance='')}\n)) GROUP BY instance_id) x\n{RUNNING} ORDER BY x.instance_id", ALERT_TIER)


def clock_sync_sql(c):
    sync, err = "node_timex_sync_status", "node_timex_maxerror_seconds"
    return with_tier(
        f"SELECT {INSTANCE_LABELS}, CAST(CASE WHEN x.sync_max = 0 AND x.maxerror >= {float(c['max_error_seconds'])} "
        "THEN x.maxerror ELSE 0 END AS REAL) AS maxerror_seconds FROM ("
        f"SELECT instance_id, max(CASE WHEN metric = '{sync}' THEN v END) AS sync_max, "
        f"max(CASE WHEN metric = '{err}' AND newest = 1 THEN v END) AS maxerror FROM ("
        "SELECT instance_id, metric, v, row_number() OVER (PARTITION BY instance_id, metric ORDER BY time DESC) AS newest "
        f"FROM (\n{gauge_arms([sync, err], instance='')}\n)) GROUP BY instance_id) x\n{RUNNING} ORDER BY x.instance_id",
        ALERT_TIER)


def store_stale_sql(c):
    # One row whatever happens: no scrape in the range reads as the whole range.
    return ("SELECT 'store' AS component, CAST($__to / 1000.0 - coalesce(max(time), $__from / 1000.0) AS REAL) "
            f"AS seconds_since_newest_scrape FROM scrape_status WHERE {range_of()}")


def discovery_stale_sql(c):
    # component_status holds one row per component (no history to bound).
    return ("SELECT component, CAST($__to / 1000.0 - coalesce(last_ok, 0) AS REAL) AS seconds_since_success "
            "FROM component_status WHERE component = 'discovery'")


DROPPED_COUNTERS = ["fleetscrape_remote_write_samples_dropped_total", "fleetscrape_remote_write_samples_failed_total",
                    "fleetscrape_store_dropped_samples_total"]


def counter_increase_sql(names):
    """The reset-aware increase of fleetscrape's own counters over the range."""
    return ("SELECT name AS counter, CAST(coalesce(sum(CASE WHEN value >= pv THEN value - pv ELSE value END), 0) AS REAL) "
            "AS increase FROM (SELECT name, value, lag(value) OVER (PARTITION BY name ORDER BY time) AS pv "
            f"FROM self_metrics WHERE {range_of()} AND name IN (" + ", ".join(f"'{n}'" for n in names) + ")) "
            "WHERE pv IS NOT NULL GROUP BY name ORDER BY name")


INSTANCE_LINK = f"/d/{INSTANCE_UID}/fleetscrape-instance?var-instance_id={{{{ $labels.instance_id }}}}"
FLEET_LINK = f"/d/{FLEET_UID}/fleetscrape-fleet?var-asg_name={{{{ $labels.asg_name }}}}"
VALUE = "{{ printf \"%.1f\" $values.A.Value }}"
WHO = "{{ $labels.instance_id }} ({{ $labels.role }}{{ if ne $labels.asg_name \"-\" }} in {{ $labels.asg_name }}{{ end }})"
FS = "{{ $labels.device }} mounted on {{ $labels.mountpoint }} of " + WHO


INSTANCE_PANEL = "CPU busy %"
FLEET_PANEL = "CPU busy % per instance"


def panel_id(uid, title):
    board = instance_dashboard() if uid == INSTANCE_UID else fleet_dashboard()
    return next(p["id"] for p in board["panels"] if p.get("title") == title)


def minutes(n):
    return int(float(n) * 60)


def alert_rule(uid, title, sql, seconds, op, threshold, c, summary, description, link, no_data="OK",
               duration=None, severity=None, tier=""):
    """A rule: query A (the SQL, over the last `seconds`), condition B (`op` threshold)."""
    query = {"refId": "A", "datasource": DS, "queryType": "table", "timeColumns": [],
             "rawQueryText": sql, "queryText": sql, "intervalMs": 1000, "maxDataPoints": 43200}
    condition = {"refId": "B", "type": "threshold", "expression": "A",
                 "datasource": {"type": "__expr__", "uid": "__expr__"},
                 "conditions": [{"type": "query", "evaluator": {"type": op, "params": [threshold]},
                                 "operator": {"type": "and"}, "query": {"params": ["B"]},
                                 "reducer": {"type": "last", "params": []}}]}
    annotations = {"summary": summary, "description": description, "dashboard": link, "reads": tier}
    # Grafana links the rule to this panel ("View panel" in notifications).
    dashboard_uid, panel = (INSTANCE_UID, INSTANCE_PANEL) if link.startswith(f"/d/{INSTANCE_UID}") else (FLEET_UID, FLEET_PANEL)
    return {"uid": uid, "title": title, "condition": "B", "dashboardUid": dashboard_uid,
            "panelId": panel_id(dashboard_uid, panel),
            "data": [{"refId": "A", "relativeTimeRange": {"from": int(seconds), "to": 0},
                      "datasourceUid": DS["uid"], "model": query},
                     {"refId": "B", "relativeTimeRange": {"from": 0, "to": 0},
                      "datasourceUid": "__expr__", "model": condition}],
            "noDataState": no_data, "execErrState": "Error", "for": duration or c["for"],
            "annotations": annotations, "labels": {"severity": severity or c["severity"], "source": "fleetscrape"},
            "isPaused": False}


def instance_rules(t):
    rules = []
    c = t["cpu_busy"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-cpu-busy", "Instance CPU busy", cpu_busy_sql(c), minutes(c["minutes"]), "gt", c["percent"], c,
            f"CPU busy above {c['percent']} % for {c['minutes']} minutes on {{{{ $labels.instance_id }}}}",
            f"{WHO} has been over {c['percent']} % CPU busy in every minute of the last {c['minutes']} minutes "
            f"(the lowest minute: {VALUE} %).", INSTANCE_LINK, tier="raw (cpu_utilization)"))
    c = t["member_unreachable"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-member-unreachable", "Instance not reached", member_unreachable_sql(c),
            minutes(c["window_minutes"]), "gt", float(c["consecutive_intervals"]) - 0.5, c,
            "{{ $labels.instance_id }} not scraped for {{ printf \"%.0f\" $values.A.Value }} intervals ({{ $labels.reason }})",
            f"The last {{{{ printf \"%.0f\" $values.A.Value }}}} scrape intervals of {WHO} stored nothing: "
            "{{ $labels.reason }}. not_reached_via_alb: its listener sent the round's requests to other members "
            "(too few requests, or the balancer is sticky); connect/timeout/http: the exporter or the instance is down. "
            "The fleet dashboard's 'Not reached now' table has the error.", INSTANCE_LINK, tier="scrape_status"))
    c = t["memory_low"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-memory-low", "Instance memory low", memory_low_sql(c), minutes(c["window_minutes"]), "lt",
            c["available_percent"], c, f"Under {c['available_percent']} % of memory available on {{{{ $labels.instance_id }}}}",
            f"MemAvailable is {VALUE} % of MemTotal on {WHO} (average of the last {c['window_minutes']} minutes).",
            INSTANCE_LINK, tier="raw (metric_samples)"))
    c = t["clock"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-clock-skew", "Instance clock skewed", clock_skew_sql(c), minutes(c["window_minutes"]), "gt", 0, c,
            "Clock skew on {{ $labels.instance_id }}",
            f"The clock of {WHO} is off by {{{{ printf \"%.3f\" $values.A.Value }}}} s (node_timex_offset_seconds "
            f"above {c['skew_seconds']} s and not shrinking). Check chrony/NTP (the Amazon Time Sync Service, 169.254.169.123).",
            INSTANCE_LINK, tier="raw (metric_samples)"))
        rules.append(alert_rule(
            "fleetscrape-clock-not-synchronising", "Instance clock not synchronising", clock_sync_sql(c),
            minutes(c["window_minutes"]), "gt", 0, c, "Clock not synchronising on {{ $labels.instance_id }}",
            f"node_timex_sync_status was 0 for {c['window_minutes']} minutes on {WHO} and the maximum error is "
            f"{VALUE} s. Check chrony/NTP.", INSTANCE_LINK, tier="raw (metric_samples)"))
    return rules


def asg_rules(t):
    rules = []
    c = t["asg_at_ceiling"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-asg-at-ceiling", "Auto Scaling group at its maximum and still busy", asg_at_ceiling_sql(c),
            minutes(c["window_minutes"]), "gt", 0, c,
            "{{ $labels.asg_name }} is at its maximum size and its members are above the CPU target",
            f"The members of {{{{ $labels.asg_name }}}} average {VALUE} % CPU busy over the last {c['window_minutes']} "
            "minutes, above the group's target-tracking target, and its desired capacity is its maximum: it cannot "
            "scale out further. Raise MaxSize, or look at why the members are busy.", FLEET_LINK,
            tier="raw (cpu_utilization), asg_membership"))
    c = t["asg_capacity_unmet"]
    if c["enabled"]:
        rules.append(alert_rule(
            "fleetscrape-asg-capacity-unmet", "Auto Scaling group short of reachable members", asg_capacity_sql(c),
            minutes(c["window_minutes"]), "gt", 0, c,
            "{{ $labels.asg_name }} is {{ printf \"%.0f\" $values.A.Value }} members short of its desired capacity",
            f"{{{{ printf \"%.0f\" $values.A.Value }}}} of the desired members of {{{{ $labels.asg_name }}}} were not "
            f"reached (no stored scrape) in the last {c['window_minutes']} minutes: launches failing, instances "
            "unhealthy, or node_exporter not running on new members.", FLEET_LINK, tier="scrape_status, asg_membership"))
    return rules


def filesystem_rules(t):
    c = t["filesystem"]
    if not c["enabled"]:
        return []
    rules = []
    trend = minutes(float(c["trend_hours"]) * 60)
    for kind, free, total, what in [("space", "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "space"),
                                    ("files", "node_filesystem_files_free", "node_filesystem_files", "inodes")]:
        for level, hours, percent in [("warning", c["filling_warning_hours"], c["filling_warning_percent"]),
                                      ("critical", c["filling_critical_hours"], c["filling_critical_percent"])]:
            rules.append(alert_rule(
                f"fleetscrape-fs-{kind}-filling-{level}", f"Filesystem {what} filling up ({hours} h)",
                fs_sql(c, free, total, hours), trend, "lt", percent, c,
                f"Filesystem predicted to run out of {what} within {hours} hours",
                f"Filesystem {FS} has {VALUE} % {what} left and its {c['trend_hours']}-hour trend reaches zero within "
                f"{hours} hours.", INSTANCE_LINK, duration=c["filling_for"], severity=level,
                tier="5-minute rollups (metric_samples_5m)"))
        for level, percent in [("warning", c["almost_out_warning_percent"]), ("critical", c["almost_out_critical_percent"])]:
            rules.append(alert_rule(
                f"fleetscrape-fs-{kind}-almost-out-{level}", f"Filesystem almost out of {what} ({percent} %)",
                fs_sql(c, free, total, None), 600, "lt", percent, c,
                f"Filesystem has less than {percent} % {what} left",
                f"Filesystem {FS} has only {VALUE} % {what} left.", INSTANCE_LINK,
                duration=c["almost_out_space_for"] if kind == "space" else c["almost_out_files_for"], severity=level,
                tier="raw (metric_samples)"))
    return rules


def fleetscrape_rules(t):
    c = t["fleetscrape"]
    if not c["enabled"]:
        return []
    window = minutes(c["dropped_window_minutes"])
    return [
        alert_rule("fleetscrape-store-stale", "fleetscrape is not storing scrapes", store_stale_sql(c), 900, "gt",
                   c["store_stale_seconds"], c, "fleetscrape's newest stored scrape is {{ printf \"%.0f\" $values.A.Value }} s old",
                   "Nothing was committed to the database for {{ printf \"%.0f\" $values.A.Value }} s: fleetscrape is down, "
                   "its store is failing (full disk, permissions: see its log and /ready), or it has nothing to scrape.",
                   f"/d/{FLEET_UID}/fleetscrape-fleet", no_data="Alerting", tier="scrape_status"),
        alert_rule("fleetscrape-discovery-failing", "fleetscrape discovery failing", discovery_stale_sql(c), 900, "gt",
                   c["discovery_stale_seconds"], c, "fleetscrape's discovery has not succeeded for {{ printf \"%.0f\" $values.A.Value }} s",
                   "The last successful discovery refresh is {{ printf \"%.0f\" $values.A.Value }} s old: fleetscrape keeps "
                   "scraping the topology it had (launches and terminations are not seen). The error is in "
                   "component_status and fleetscrape's log; run `fleetscrape preflight` for the IAM side.",
                   f"/d/{FLEET_UID}/fleetscrape-fleet", no_data="Alerting", tier="component_status"),
        alert_rule("fleetscrape-samples-dropped", "fleetscrape dropping samples", counter_increase_sql(DROPPED_COUNTERS),
                   window, "gt", 0, c, "fleetscrape dropped {{ printf \"%.0f\" $values.A.Value }} samples ({{ $labels.counter }})",
                   f"{{{{ $labels.counter }}}} grew by {{{{ printf \"%.0f\" $values.A.Value }}}} in the last "
                   f"{c['dropped_window_minutes']} minutes: remote_write's queue overflowed or its receiver rejected "
                   "samples, or the store lost samples it could not write. See /metrics and the log.",
                   f"/d/{FLEET_UID}/fleetscrape-fleet", tier="self_metrics"),
        alert_rule("fleetscrape-log-lines-dropped", "fleetscrape dropping log lines",
                   counter_increase_sql(["fleetscrape_log_lines_dropped_total"]), window, "gt", 0, c,
                   "fleetscrape dropped {{ printf \"%.0f\" $values.A.Value }} log lines",
                   "fleetscrape's stderr did not keep up and {{ printf \"%.0f\" $values.A.Value }} log lines were dropped "
                   "(scraping went on): the container runtime's log driver is blocked or slow.",
                   f"/d/{FLEET_UID}/fleetscrape-fleet", severity="warning", tier="self_metrics"),
    ]


def load_thresholds(path=ALERT_TOML):
    import tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def alert_groups(t):
    g = t["groups"]
    groups = [("fleetscrape-instances", g["interval"], instance_rules(t)),
              ("fleetscrape-autoscaling", g["interval"], asg_rules(t)),
              ("fleetscrape-filesystems", g["filesystem_interval"], filesystem_rules(t)),
              ("fleetscrape-self", g["interval"], fleetscrape_rules(t))]
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": name, "folder": g["folder"], "interval": interval,
                                         "rules": rules} for name, interval, rules in groups if rules]}


def notifications():
    """Opt-in: a contact point and a policy tree that routes fleetscrape's rules to it.
    A provisioned policy tree replaces the operator's whole tree."""
    return {"apiVersion": 1,
            "contactPoints": [{"orgId": 1, "name": "fleetscrape-oncall", "receivers": [
                {"uid": "fleetscrape-oncall-email", "type": "email",
                 "settings": {"addresses": "oncall@example.com", "singleEmail": True}}]}],
            "policies": [{"orgId": 1, "receiver": "fleetscrape-oncall",
                          "group_by": ["grafana_folder", "alertname"],
                          "routes": [{"receiver": "fleetscrape-oncall", "object_matchers": [["severity", "=", "critical"]],
                                      "group_by": ["grafana_folder", "alertname", "instance_id", "asg_name"],
                                      "group_wait": "30s", "repeat_interval": "1h"}],
                          "group_wait": "1m", "group_interval": "5m", "repeat_interval": "4h"}]}


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(v, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def to_yaml(v, indent=0):
    """Block YAML; multi-line strings (the SQL) as literal blocks."""
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return " {}"
        out = ""
        for k, x in v.items():
            out += f"\n{pad}{k}:" + to_yaml(x, indent + 1)
        return out
    if isinstance(v, list):
        if not v:
            return " []"
        out = ""
        for x in v:
            body = to_yaml(x, indent + 1)
            if isinstance(x, dict) and x:
                out += f"\n{pad}- " + body.lstrip("\n").lstrip()
            else:
                out += f"\n{pad}-" + body
        return out
    if isinstance(v, str) and "\n" in v and not v.endswith("\n") and not any(l != l.rstrip() for l in v.split("\n")):
        return " |-\n" + "\n".join(pad + line if line else "" for line in v.split("\n"))
    return " " + yaml_scalar(v)


def render_yaml(d, header):
    return header + to_yaml(d).lstrip("\n") + "\n"


RULES_HEADER = ("# Generated by infra/grafana/dashboards.py from infra/grafana/alerting.toml: edit those,\n"
                "# then run python3 infra/grafana/dashboards.py (docs/alerting.md).\n")
NOTIFICATIONS_HEADER = ("# Opt-in (docs/alerting.md, \"Routing\"): a contact point and a notification policy tree for\n"
                        "# fleetscrape's rules. A provisioned policy tree REPLACES the organisation's whole tree: copy\n"
                        "# this file into provisioning/alerting/ only when Grafana serves fleetscrape alone, and set\n"
                        "# the addresses. Generated by infra/grafana/dashboards.py.\n")


def render(d):
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main():
    outputs = {HERE / "dashboards" / "fleetscrape-instance.json": render(instance_dashboard()),
               HERE / "dashboards" / "fleetscrape-fleet.json": render(fleet_dashboard()),
               RULES_FILE: render_yaml(alert_groups(load_thresholds()), RULES_HEADER),
               NOTIFICATIONS_FILE: render_yaml(notifications(), NOTIFICATIONS_HEADER)}
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in outputs.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        sys.exit("out of date (run python3 infra/grafana/dashboards.py): " + ", ".join(map(str, stale)))


if __name__ == "__main__":
    main()
