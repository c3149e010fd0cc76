#!/usr/bin/env python3
"""The seed's problem, solved, on one machine: fleetscrape against moto.

Starts moto on loopback and seeds the seed's topology (localstack/seed.py),
runs one real node_exporter per instance on a fake host that reports the
instance's id (DMI) and CPU counters driven at a known level, starts the ALB
emulator (listeners 9100/9101/9102 on loopback), and runs `fleetscrape run`
into data/demo.db. Then it plays the seed's load test: the ASG member goes to
100% CPU and the group scales out to 3 (moto never evaluates scaling
policies, so the demo sets the desired capacity itself: to 2, then 3), the new
members idle at known levels. It ends with each instance's CPU from SQLite, one row per
ASG member, and a chart of it in docs/demo.png (`fleetscrape report`).
Everything it starts is stopped at the end or on Ctrl-C.
Nothing connects anywhere but 127.0.0.1. Run it through localstack/demo.sh.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
FLEETSCRAPE = os.path.join(TARGET, "debug", "fleetscrape")
EMULATOR = os.path.join(TARGET, "debug", "alb-emulator")
FIXTURE = os.path.join(ROOT, "tests", "testdata", "fake-host")
DB = os.path.join(ROOT, "data", "demo.db")
children = []


def say(text):
    print(f"\033[1m== {text}\033[0m", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, **kw):
    child = subprocess.Popen(args, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
    children.append(child)
    return child


def wait_port(port, what):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not start on 127.0.0.1:{port}")


class FakeHost:
    """A node_exporter over a fake procfs/sysfs reporting `instance_id` at `busy` CPU."""

    def __init__(self, workdir, instance_id, busy):
        self.dir = os.path.join(workdir, instance_id)
        shutil.copytree(FIXTURE, self.dir)
        with open(os.path.join(self.dir, "sys/class/dmi/id/board_asset_tag"), "w") as f:
            f.write(instance_id + "\n")
        os.remove(os.path.join(self.dir, "textfile/ec2.prom"))
        self.busy, self.user, self.idle, self.last = busy, 100000.0, 1500000.0, time.monotonic()
        self.write_stat()
        self.port = free_port()
        start(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{self.port}", "--path.sysfs=sys",
               "--path.procfs=proc", "--path.rootfs=.", "--collector.disable-defaults", "--collector.cpu",
               "--collector.dmi", "--collector.uname", "--collector.stat", "--collector.loadavg",
               "--collector.meminfo"], cwd=self.dir)
        wait_port(self.port, f"node_exporter of {instance_id}")

    def tick(self):
        now = time.monotonic()
        elapsed, self.last = now - self.last, now
        self.user += self.busy * elapsed * 100
        self.idle += (1 - self.busy) * elapsed * 100
        self.write_stat()

    def write_stat(self):
        line = lambda name: f"{name} {self.user:.0f} 250 40000 {self.idle:.0f} 2000 0 750 150 0 0\n"
        text = (f"cpu  {2 * self.user:.0f} 500 80000 {2 * self.idle:.0f} 4000 0 1500 300 0 0\n" + line("cpu0") + line("cpu1")
                + "intr 5000000 0\nctxt 9000000\nbtime 1732500000\nprocesses 45000\nprocs_running 2\nprocs_blocked 0\n")
        tmp = os.path.join(self.dir, "proc/.stat")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.dir, "proc/stat"))


def seed(*args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "localstack", "seed.py"), *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    workdir = tempfile.mkdtemp(prefix="fleetscrape-demo-")
    hosts = {}
    stop = threading.Event()

    def drive():
        while not stop.wait(0.05):
            for host in list(hosts.values()):
                host.tick()

    try:
        moto_port = free_port()
        say(f"starting moto (the local AWS emulator) on 127.0.0.1:{moto_port}")
        start(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)])
        wait_port(moto_port, "moto")
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto_port}"

        say("seeding the seed's topology: internal ALB 'backend'; 9100, 9101 → one Basic instance each; 9102 → ASG 'web' (min 1, max 4, 50% CPU target)")
        topo = seed()
        basic_a, basic_b = topo["basic"]["basic-a"], topo["basic"]["basic-b"]
        first = topo["asg_members"][0]
        say(f"fake hosts: node_exporter per instance, reporting its id; CPU {basic_a} 90%, {basic_b} 10%, {first} 40%")
        for instance, busy in ((basic_a, 0.9), (basic_b, 0.1), (first, 0.4)):
            hosts[instance] = FakeHost(workdir, instance, busy)
        threading.Thread(target=drive, daemon=True).start()

        listeners = {9100: [basic_a], 9101: [basic_b], 9102: [first]}
        args = [EMULATOR, "--balancing", "random"]
        for port, members in listeners.items():
            args += ["--listener", f"{port}@127.0.0.1:0=" + ",".join(f"127.0.0.1:{hosts[m].port}" for m in members)]
        emulator = start(args, stdout=subprocess.PIPE, text=True)
        bound = json.loads(emulator.stdout.readline())
        say(f"ALB emulator (random balancing, like the seed's ALB): {bound['listeners']}")

        rules = "".join(
            f"  - {{source_labels: [__meta_elbv2_listener_port], regex: '{port}', target_label: __alb_address__, replacement: '{addr}'}}\n"
            for port, addr in bound["listeners"].items())
        config = os.path.join(workdir, "fleetscrape.yml")
        with open(config, "w") as f:
            f.write(f"aws:\n  region: ap-northeast-2\n  endpoint_url: http://127.0.0.1:{moto_port}\n"
                    "discovery:\n  refresh_interval: 5s\n  early_refresh_min_interval: 2s\n"
                    "scrape:\n  interval: 2s\n  timeout: 2s\n  mode: via_alb\n"
                    f"relabel_configs:\n{rules}storage:\n  path: {DB}\n  flush_interval: 1s\n"
                    f"http:\n  listen_address: 127.0.0.1:{free_port()}\n")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(DB + suffix):
                os.remove(DB + suffix)
        say(f"fleetscrape run (via_alb, 2 s interval) → {os.path.relpath(DB, ROOT)}; its log: {workdir}/fleetscrape.log")
        log = open(os.path.join(workdir, "fleetscrape.log"), "w")
        run = start([FLEETSCRAPE, "run", "--config", config], stderr=log)

        def progress(seconds, what):
            for left in range(seconds, 0, -5):
                print(f"   {what}: {left} s left", flush=True)
                time.sleep(min(5, left))
                if run.poll() is not None:
                    sys.exit(f"fleetscrape run exited with {run.returncode}; see {workdir}/fleetscrape.log")

        progress(20, "baseline")
        say(f"load test: {first} goes to 100% CPU; the 50% target-tracking policy would scale out")
        hosts[first].busy = 1.0
        progress(10, "load")
        admin = f"http://{bound['admin']}/listeners/9102"
        members = [first]
        for desired, busy in ((2, 0.1), (3, 0.3)):
            say(f"moto never evaluates scaling policies: the demo sets the ASG's desired capacity to {desired} itself")
            members_now = seed("--desired", str(desired))["asg_members"]
            for instance in [m for m in members_now if m not in members]:
                hosts[instance] = FakeHost(workdir, instance, busy)
                say(f"new member {instance} idles at {busy:.0%} and takes traffic through listener 9102")
            members = members_now
            body = ",".join(f"127.0.0.1:{hosts[m].port}" for m in members).encode()
            urllib.request.urlopen(urllib.request.Request(admin, data=body, method="PUT")).read()
            progress(15 if desired == 2 else 25, f"scaled out to {desired}")

        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        say("CPU per instance from SQLite (fleetscrape report): every ASG member on its own row")
        png = os.path.join(ROOT, "docs", "demo.png")
        subprocess.run([FLEETSCRAPE, "report", "--db", DB, "--png", png], check=True)
        print(f"\nThe database stays at {os.path.relpath(DB, ROOT)}; its tables are documented in docs/sql.md.")
    finally:
        stop.set()
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; everything the demo started has been stopped")
