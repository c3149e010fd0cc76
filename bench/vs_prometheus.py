#!/usr/bin/env python3
"""fleetscrape and Debian's Prometheus side by side, on the same work, in one run.

N real node_exporters (Debian's prometheus-node-exporter, real /proc, Debian's
defaults minus systemd) listen on distinct loopback addresses 127.0.1.K:9100;
moto holds a topology of N EC2 instances registered in an ALB target group, and
each exporter reports its instance id through the textfile collector. Both
engines scrape the same exporters at the same interval at the same time:
fleetscrape discovers them through moto (direct mode, relabeled to the loopback
addresses), Prometheus has them as static targets. After a warm-up, one
steady-state window measures for each:

- CPU per sample offered: utime+stime from /proc/PID/stat over the window,
  divided by the samples in the payloads scraped in the window (Prometheus:
  sum_over_time(scrape_samples_scraped); fleetscrape: scrape_status.samples,
  which with no metric_relabel_configs is every sample of every payload);
- peak RSS (VmHWM) and RSS at the end (VmRSS);
- disk bytes per sample offered since start (fleetscrape: db + wal + shm;
  Prometheus: its TSDB directory);
- intervals stored: per target, the scrapes stored in the window (fleetscrape:
  `scrape_status` rows with up = 1; Prometheus: sum_over_time(up)) divided by
  the intervals in it; the mean over targets, and the worst target;
- freshness: every 5 s of the window, the age of the newest stored scrape
  (fleetscrape: max(time) of `scrape_status` with up = 1, read as Grafana
  would; Prometheus: time() - max(timestamp(up))), the worst seen reported;
- the store's own counters at the end (fleetscrape's /metrics: held, dropped
  and late samples, compaction steps, the longest pause of ingest);
- the CPU of the fixture server (scale mode), which shares the machine;
- query latency, median of 5: CPU busy per instance over the window
  (fleetscrape's cpu_utilization vs PromQL's 1860-style
  100 * (1 - avg by (instance) (rate(idle)))), and one gauge of one instance;
- with --restart (on in scale mode), after the window: each is killed with
  SIGKILL and started again on its data, timed until it serves (Prometheus:
  /-/ready after its WAL replay; fleetscrape: listening after the store's
  head is rebuilt from the scrape log, whose log line is shown).

The scale mode (--scale) replaces the exporters with bench/fixture_server.py:
1,000 targets (default; --targets 2000 for the larger fleet) of ~1,100 samples
each (real payloads widened to a 48-CPU host, values moving as the real
exporter's), at 15 s, each on its own loopback address 127.30.X.Y:9100 mapped
from the instance's private IP 10.30.X.Y by one relabel rule. Its default
windows include the store's background work: a 4-minute warm-up, then a
10-minute window in which blocks are compacted.

Loopback only, fake credentials; it stops everything it started. Not part of the
test command. Usage:

    bench/vs-prometheus.sh [--targets 20] [--interval 1] [--warmup 20] [--window 120] [--quick] [--json FILE]
    bench/vs-prometheus.sh --scale [--targets 1000|2000] [--interval 15] [--warmup 240] [--window 600]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REGION = "ap-northeast-2"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text):
    print(f"== {text}", file=sys.stderr, flush=True)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, what, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {host}:{port} within {limit} s")


class Processes:
    """Everything started, stopped on exit."""

    def __init__(self):
        self.children = []

    def start(self, args, log, **kw):
        child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.children.append(child)
        return child

    def stop(self):
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def memory_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def du(paths):
    total = 0
    for path in paths:
        if os.path.isdir(path):
            for dirpath, _, files in os.walk(path):
                total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if os.path.exists(os.path.join(dirpath, f)))
        elif os.path.exists(path):
            total += os.path.getsize(path)
    return total


def seed(endpoint, n, wide=False):
    """n instances behind one target group; returns {instance id: private IP}."""
    import boto3

    kw = dict(endpoint_url=endpoint, region_name=REGION)
    ec2, elb = boto3.client("ec2", **kw), boto3.client("elbv2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    cidrs = (("10.30.0.0/17", "a"), ("10.30.128.0/17", "c")) if wide else (("10.30.1.0/24", "a"), ("10.30.2.0/24", "c"))
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for cidr, zone in cidrs
    ]
    ips = {}
    while len(ips) < n:
        batch = min(50, n - len(ips))
        reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=batch, MaxCount=batch, InstanceType="t3.micro", SubnetId=subnets[0])
        ips.update((i["InstanceId"], i["PrivateIpAddress"]) for i in reply["Instances"])
    ids = list(ips)
    lb = elb.create_load_balancer(Name="bench", Subnets=subnets, Scheme="internal", Type="application")
    lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="bench", Protocol="HTTP", Port=9100, VpcId=vpc, TargetType="instance")
    tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
    for start in range(0, n, 50):
        elb.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i, "Port": 9100} for i in ids[start : start + 50]])
    elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=9100, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    return ips


def prom_query(port, path, params):
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:
        body = json.load(reply)
    return body, time.perf_counter() - started


def prom_scalar(port, query, at):
    body, _ = prom_query(port, "/api/v1/query", {"query": query, "time": f"{at:.3f}"})
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def watch_cpu(pids, until, step, timeline):
    """Every `step` seconds until `until`: each process's cores used since the last reading (what grows with time)."""
    last = {k: cpu_seconds(pid) for k, pid in pids.items()}
    last_t = time.time()
    while time.time() + step <= until + 1:
        time.sleep(step)
        now = time.time()
        current = {k: cpu_seconds(pid) for k, pid in pids.items()}
        timeline.append({k: (current[k] - last[k]) / (now - last_t) for k in pids})
        last, last_t = current, now


def table_bytes(db):
    """Bytes on disk by table (indexes counted with their table), from SQLite's dbstat."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        owners = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"))
        sizes = {}
        for name, pages in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owners.get(name, name)
            sizes[table] = sizes.get(table, 0) + pages
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        sizes["(free pages)"] = free
        return sizes
    except sqlite3.Error as e:
        return {f"(dbstat unavailable: {e})": 0}
    finally:
        conn.close()


def watch_freshness(db, prom_port, until, ages):
    """Every 5 s until `until`: how old each engine's newest stored scrape is."""
    while time.time() < until:
        now = time.time()
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            newest = conn.execute("SELECT max(time) FROM scrape_status WHERE up = 1").fetchone()[0]
            conn.close()
            if newest is not None:
                ages["fleetscrape"].append(now - newest)
            newest = prom_scalar(prom_port, "max(timestamp(up))", now)
            if newest:
                ages["prometheus"].append(now - newest)
        except (sqlite3.Error, OSError, ValueError) as e:
            print(f"freshness probe failed: {e}", file=sys.stderr)
        time.sleep(max(0.0, 5.0 - (time.time() - now)))


STORE_COUNTERS = ("held_samples", "dropped_samples_total", "late_samples_total", "compaction_steps_total",
                  "compacted_blocks_total", "longest_pause_seconds", "errors_total", "queued_samples",
                  "backpressure_waits_total", "backpressure_seconds_total", "wal_bytes", "longest_checkpoint_seconds")


def restart_after_kill(procs, child, args_, log, ready):
    """kill -9 `child`, start `args_` again, and return the seconds until
    `ready()` is true (the store reopened and its head rebuilt, or the TSDB's
    WAL replayed)."""
    child.kill()
    child.wait()
    started = time.monotonic()
    procs.start(args_[0], log, **args_[1])
    while not ready():
        if time.monotonic() - started > 600:
            return float("nan")
        time.sleep(0.05)
    return time.monotonic() - started


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def fleetscrape_counters(port):
    """The store's counters from fleetscrape's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    wanted = {f"fleetscrape_store_{name}" for name in STORE_COUNTERS}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


def median_ms(timings):
    return statistics.median(timings) * 1000.0


def sql_latency(db, sql, params, tries=5):
    timings, rows = [], 0
    for _ in range(tries):
        # Opened like Grafana's plugin: a connection per query, query_only, busy_timeout.
        started = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=5)
        conn.execute("PRAGMA query_only = 1")
        rows = len(conn.execute(sql, params).fetchall())
        conn.close()
        timings.append(time.perf_counter() - started)
    return median_ms(timings), rows


def promql_latency(port, query, start, end, step, tries=5):
    timings, points = [], 0
    for _ in range(tries):
        body, took = prom_query(port, "/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step})
        timings.append(took)
        points = sum(len(r["values"]) for r in body["data"]["result"])
    return median_ms(timings), points


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--interval", type=int, default=1, help="scrape interval, seconds")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--window", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="5 targets, 10 s warm-up, 30 s window (a smoke run)")
    parser.add_argument("--scale", action="store_true", help="the fixture server instead of node_exporters: 1,000 targets at 15 s")
    parser.add_argument("--cpus", type=int, default=48, help="scale mode: CPUs of the fixture payload (48: ~1,100 samples)")
    parser.add_argument("--fleetscrape", default=None, help="binary (default: target/release/fleetscrape)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--perf", default=None, help="record fleetscrape with perf over the window into this file")
    parser.add_argument("--restart", action="store_true", help="after the window, kill -9 both and time their restart (on in scale mode)")
    args = parser.parse_args()
    given = set(a.split("=")[0] for a in sys.argv[1:])
    if args.scale:
        args.restart = True
        for flag, value in (("--targets", 1000), ("--interval", 15), ("--warmup", 240), ("--window", 600)):
            if flag not in given:
                setattr(args, flag[2:], value)
    if args.quick:
        args.targets, args.warmup, args.window = 5, 10, 30
    if args.targets > 250 and not args.scale:
        sys.exit("at most 250 exporters (127.0.1.1-250); the scale mode for 1,000 targets is separate")
    binary = args.fleetscrape or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "fleetscrape")
    for tool in ("moto_server", "prometheus", "prometheus-node-exporter"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (bench/vs-prometheus.sh installs it)")
    if not os.path.exists(binary):
        sys.exit(f"{binary} is missing: cargo build --release")
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    os.environ.pop("AWS_ENDPOINT_URL", None)

    work = tempfile.mkdtemp(prefix="fleetscrape-bench-")
    procs = Processes()
    # SIGTERM (a killed run) must still stop every child it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    log = open(os.path.join(work, "bench.log"), "w")
    try:
        moto_port = free_port()
        procs.start(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)], log)
        wait_port("127.0.0.1", moto_port, "moto")
        endpoint = f"http://127.0.0.1:{moto_port}"
        say(f"moto on {endpoint}: {args.targets} instances behind an ALB target group")
        ips = seed(endpoint, args.targets, wide=args.scale)
        ids = list(ips)

        addresses = {}
        if args.scale:
            addresses = {i: "127.30." + ip.split(".", 2)[2] + ":9100" for i, ip in ips.items()}
            with open(os.path.join(work, "targets.json"), "w") as f:
                json.dump({a: i for i, a in addresses.items()}, f)
            fixture = procs.start([sys.executable, os.path.join(ROOT, "bench", "fixture_server.py"), os.path.join(work, "targets.json"),
                                   "--cpus", str(args.cpus)], log)
        for k, instance in enumerate(ids if not args.scale else [], start=1):
            textfile = os.path.join(work, "tf", str(k))
            os.makedirs(textfile)
            with open(os.path.join(textfile, "ec2.prom"), "w") as f:
                f.write(f'ec2_instance_info{{instance_id="{instance}"}} 1\n')
            host = f"127.0.1.{k}"
            procs.start(["prometheus-node-exporter", f"--web.listen-address={host}:9100", "--no-collector.systemd",
                         f"--collector.textfile.directory={textfile}", "--log.level=error"], log)
            addresses[instance] = f"{host}:9100"
        for address in addresses.values():
            host, port = address.split(":")
            wait_port(host, int(port), "node_exporter")
        say(f"{len(addresses)} fixture targets on 127.30.X.Y:9100" if args.scale else f"{len(addresses)} node_exporters on 127.0.1.1-{len(addresses)}:9100")

        interval = f"{args.interval}s"
        db = os.path.join(work, "fleetscrape.db")
        if args.scale:
            rules = ("  - {source_labels: [__meta_ec2_private_ip], regex: '10\\.30\\.(\\d+)\\.(\\d+)', "
                     "target_label: __address__, replacement: '127.30.$1.$2:9100'}\n")
        else:
            rules = "".join(
                f"  - {{source_labels: [__meta_ec2_instance_id], regex: '{i}', target_label: __address__, replacement: '{a}'}}\n"
                for i, a in addresses.items()
            )
        fs_http = free_port()
        fs_config = os.path.join(work, "fleetscrape.yml")
        with open(fs_config, "w") as f:
            f.write(f"aws:\n  region: {REGION}\n  endpoint_url: {endpoint}\ndiscovery:\n  refresh_interval: 60s\n"
                    f"scrape:\n  mode: direct\n  interval: {interval}\n  timeout: {interval}\n"
                    f"relabel_configs:\n{rules}storage:\n  path: {db}\nhttp:\n  listen_address: 127.0.0.1:{fs_http}\n")
        prom_port = free_port()
        prom_config = os.path.join(work, "prometheus.yml")
        targets = ", ".join(f"'{a}'" for a in addresses.values())
        with open(prom_config, "w") as f:
            f.write(f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
                    f"scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [{targets}]\n")
        tsdb = os.path.join(work, "tsdb")
        prom_args = (["prometheus", f"--config.file={prom_config}", f"--storage.tsdb.path={tsdb}",
                      f"--web.listen-address=127.0.0.1:{prom_port}"], {})
        # The store's own lines at info: the head's rebuild after a restart is one.
        fleet_args = ([binary, "run", "--config", fs_config], {"env": {**os.environ, "RUST_LOG": "warn,fleetscrape::store=info"}})
        prom = procs.start(prom_args[0], log, **prom_args[1])
        fleet = procs.start(fleet_args[0], log, **fleet_args[1])
        wait_port("127.0.0.1", prom_port, "prometheus")
        wait_port("127.0.0.1", fs_http, "fleetscrape")
        say(f"both scraping every {interval}; warm-up {args.warmup} s")
        time.sleep(args.warmup)

        t0 = time.time()
        cpu0 = {"prometheus": cpu_seconds(prom.pid), "fleetscrape": cpu_seconds(fleet.pid)}
        fixture_cpu0 = cpu_seconds(fixture.pid) if args.scale else 0.0
        ages = {"prometheus": [], "fleetscrape": []}
        freshness = threading.Thread(target=watch_freshness, args=(db, prom_port, t0 + args.window, ages), daemon=True)
        freshness.start()
        timeline = []
        cpu_watch = threading.Thread(target=watch_cpu, args=({"prometheus": prom.pid, "fleetscrape": fleet.pid}, t0 + args.window, 60, timeline), daemon=True)
        cpu_watch.start()
        say(f"steady-state window: {args.window} s")
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(fleet.pid), "-o", args.perf, "--", "sleep", str(args.window)],
                                    stdout=log, stderr=subprocess.STDOUT)
        time.sleep(args.window)
        t1 = time.time()
        cpu1 = {"prometheus": cpu_seconds(prom.pid), "fleetscrape": cpu_seconds(fleet.pid)}
        fixture_cpu = (cpu_seconds(fixture.pid) - fixture_cpu0) if args.scale else None
        freshness.join()
        cpu_watch.join()
        store_counters = fleetscrape_counters(fs_http)
        peak = {"prometheus": memory_kib(prom.pid, "VmHWM"), "fleetscrape": memory_kib(fleet.pid, "VmHWM")}
        rss = {"prometheus": memory_kib(prom.pid, "VmRSS"), "fleetscrape": memory_kib(fleet.pid, "VmRSS")}
        disk = {"prometheus": du([tsdb]), "fleetscrape": du([db, db + "-wal", db + "-shm"])}
        if args.perf:
            perf.wait()
        # fleetscrape commits every storage.flush_interval (2 s): let the
        # window's last scrapes land before counting them.
        time.sleep(3)

        window = f"{int(t1 - t0)}s"
        offered = {"prometheus": prom_scalar(prom_port, f"sum(sum_over_time(scrape_samples_scraped[{window}]))", t1)}
        since_start = {"prometheus": prom_scalar(prom_port, "sum(sum_over_time(scrape_samples_scraped[1h]))", t1)}
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        offered["fleetscrape"] = conn.execute("SELECT coalesce(sum(samples), 0) FROM scrape_status WHERE up = 1 AND time >= ? AND time < ?", (t0, t1)).fetchone()[0]
        since_start["fleetscrape"] = conn.execute("SELECT coalesce(sum(samples), 0) FROM scrape_status WHERE up = 1").fetchone()[0]
        up = conn.execute("SELECT count(DISTINCT instance_id) FROM scrape_status WHERE up = 1 AND time >= ?", (t0,)).fetchone()[0]
        intervals = (t1 - t0) / args.interval
        per_target = dict(conn.execute("SELECT instance_id, count(*) FROM scrape_status WHERE up = 1 AND time >= ? AND time < ? GROUP BY instance_id", (t0, t1)))
        stored_share = {"fleetscrape": [per_target.get(i, 0) / intervals for i in ids]}
        body, _ = prom_query(prom_port, "/api/v1/query", {"query": f"sum_over_time(up[{window}])", "time": f"{t1:.3f}"})
        stored_share["prometheus"] = [float(r["value"][1]) / intervals for r in body["data"]["result"]]
        stored_share["prometheus"] += [0.0] * (args.targets - len(stored_share["prometheus"]))
        conn.close()
        if up != args.targets:
            say(f"warning: fleetscrape stored {up} of {args.targets} instances in the window")

        one = ids[0]
        queries = {
            "CPU busy per instance over the window": (
                sql_latency(db, "SELECT time, instance_id, value FROM cpu_utilization WHERE time >= ? AND time < ? ORDER BY time", (t0, t1)),
                promql_latency(prom_port, f'100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{max(4 * args.interval, 4)}s])))', t0, t1, args.interval),
            ),
            "one gauge of one instance over the window": (
                sql_latency(db, "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = ? AND time >= ? AND time < ? ORDER BY time", (one, t0, t1)),
                promql_latency(prom_port, f'node_load1{{instance="{addresses[one]}"}}', t0, t1, args.interval),
            ),
        }

        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        per_sample = {k: 1e6 * cpu[k] / offered[k] if offered[k] else float("nan") for k in cpu}
        bytes_per = {k: disk[k] / since_start[k] if since_start[k] else float("nan") for k in disk}
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
        rows = [
            ("intervals stored, mean over targets (%)", f"{100 * mean(stored_share['prometheus']):.2f}", f"{100 * mean(stored_share['fleetscrape']):.2f}",
             mean(stored_share["fleetscrape"]) / mean(stored_share["prometheus"])),
            ("intervals stored, worst target (%)", f"{100 * min(stored_share['prometheus']):.2f}", f"{100 * min(stored_share['fleetscrape']):.2f}",
             min(stored_share["fleetscrape"]) / max(min(stored_share["prometheus"]), 1e-9)),
            ("newest stored scrape, oldest seen (s)", f"{max(ages['prometheus'], default=float('nan')):.1f}", f"{max(ages['fleetscrape'], default=float('nan')):.1f}",
             max(ages["fleetscrape"], default=float("nan")) / max(max(ages["prometheus"], default=float("nan")), 1e-9)),
            ("samples ingested per second", f"{offered['prometheus'] / (t1 - t0):,.0f}", f"{offered['fleetscrape'] / (t1 - t0):,.0f}", offered["fleetscrape"] / offered["prometheus"]),
            ("CPU cores used", f"{cpu['prometheus'] / (t1 - t0):.3f}", f"{cpu['fleetscrape'] / (t1 - t0):.3f}", cpu["fleetscrape"] / cpu["prometheus"]),
            ("samples offered in the window", f"{offered['prometheus']:,.0f}", f"{offered['fleetscrape']:,.0f}", offered["fleetscrape"] / offered["prometheus"]),
            ("CPU in the window (s)", f"{cpu['prometheus']:.2f}", f"{cpu['fleetscrape']:.2f}", cpu["fleetscrape"] / cpu["prometheus"]),
            ("CPU per sample offered (µs)", f"{per_sample['prometheus']:.2f}", f"{per_sample['fleetscrape']:.2f}", per_sample["fleetscrape"] / per_sample["prometheus"]),
            ("peak RSS (MiB)", f"{peak['prometheus'] / 1024:.1f}", f"{peak['fleetscrape'] / 1024:.1f}", peak["fleetscrape"] / peak["prometheus"]),
            ("RSS at the end (MiB)", f"{rss['prometheus'] / 1024:.1f}", f"{rss['fleetscrape'] / 1024:.1f}", rss["fleetscrape"] / rss["prometheus"]),
            ("disk per sample offered since start (B)", f"{bytes_per['prometheus']:.2f}", f"{bytes_per['fleetscrape']:.2f}", bytes_per["fleetscrape"] / bytes_per["prometheus"]),
        ]
        for name, ((fs_ms, fs_rows), (prom_ms, prom_points)) in queries.items():
            rows.append((f"{name} (ms; rows/points)", f"{prom_ms:.1f} ({prom_points})", f"{fs_ms:.1f} ({fs_rows})", fs_ms / prom_ms))
        if args.restart:
            # A crash, then a start on the same data: Prometheus replays its
            # WAL before /-/ready answers 200; fleetscrape opens the store and
            # rebuilds its head from the scrape log before it listens.
            say("restart after kill -9: each in turn")
            log.flush()
            prom_restart = restart_after_kill(procs, prom, prom_args, log, lambda: http_ok(f"http://127.0.0.1:{prom_port}/-/ready"))
            fleet_restart = restart_after_kill(procs, fleet, fleet_args, log, lambda: http_ok(f"http://127.0.0.1:{fs_http}/healthz"))
            rows.append(("restart after kill -9, until it serves (s)", f"{prom_restart:.1f}", f"{fleet_restart:.1f}", fleet_restart / prom_restart))
            log.flush()
            with open(os.path.join(work, "bench.log")) as f:
                rebuilt = [line.strip() for line in f if "open minutes rebuilt" in line]
            if rebuilt:
                say(f"fleetscrape: {rebuilt[-1]}")
        what = f"fixture targets ({args.cpus}-CPU payloads)" if args.scale else "node_exporters"
        print(f"\n{args.targets} {what} at {interval}, window {t1 - t0:.1f} s after {args.warmup} s warm-up\n")
        print("| | Prometheus 2.42 | fleetscrape | fleetscrape / Prometheus |")
        print("|---|---|---|---|")
        for name, prom_value, fs_value, ratio in rows:
            print(f"| {name} | {prom_value} | {fs_value} | {ratio:.2f}× |")
        if timeline:
            print("\nCores used, minute by minute in the window (Prometheus / fleetscrape = ratio):")
            print("  " + "  ".join(f"{m['prometheus']:.3f}/{m['fleetscrape']:.3f}={m['fleetscrape'] / max(m['prometheus'], 1e-9):.2f}" for m in timeline))
        sizes = table_bytes(db)
        print("\nfleetscrape's file by table (MiB): " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v >= 2**20 / 10))
        if fixture_cpu is not None:
            print(f"\nThe fixture server used {fixture_cpu / (t1 - t0):.3f} cores of the same machine in the window.")
        print("fleetscrape's store at the end: " + ", ".join(f"{k.removeprefix('fleetscrape_store_')} {v:g}" for k, v in store_counters.items()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"targets": args.targets, "interval": args.interval, "window": t1 - t0, "rows": rows,
                           "fixture_cores": fixture_cpu / (t1 - t0) if fixture_cpu is not None else None,
                           "store": store_counters, "cpu_timeline": timeline, "table_bytes": sizes}, f, indent=2)
    finally:
        procs.stop()
        log.close()
        if os.environ.get("KEEP_BENCH_DIR"):
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
