#!/usr/bin/env python3
"""A fast stand-in for many node_exporters, for the scale mode of the benchmark.

Serves GET /metrics on every address of a JSON map {"127.30.0.5:9100": "i-0abc…"}
given on the command line, each payload a real node_exporter 1.5.0 payload of
this machine (bench/data/node_exporter-t0.prom) widened to a 36-CPU host (every
per-CPU series repeated for cpu 0–35, ~1,000 samples), with the instance's
`ec2_instance_info` identity line. Values move as the real exporter's did:
a series that changed between the two recorded payloads (t0, t15) advances at
its measured rate (counters) or moves (gauges); the others stay constant.

Loopback only: it refuses any address outside 127.0.0.0/8.

    fixture_server.py MAP.json [--cpus 36]
"""

import argparse
import asyncio
import ipaddress
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def load(path):
    lines, values = [], {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            lines.append(line)
            m = SAMPLE.match(line)
            if m:
                values[(m.group(1), m.group(2) or "")] = m.group(3)
    return lines, values


def template(cpus):
    """(static text pieces, [(key, base, rate or amplitude, counter)]) of the widened payload."""
    lines, _ = load(os.path.join(HERE, "data", "node_exporter-t0.prom"))
    _, later = load(os.path.join(HERE, "data", "node_exporter-t15.prom"))
    types = {}
    out = []
    for line in lines:
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        m = SAMPLE.match(line)
        if not m:
            out.append(("text", line))
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        copies = [labels]
        cpu = re.search(r'cpu="(\d+)"', labels)
        if cpu:
            if cpu.group(1) != "0":
                continue  # cpu 0 stands for every CPU
            copies = [labels.replace('cpu="0"', f'cpu="{n}"') for n in range(cpus)]
        try:
            base = float(value)
            nxt = float(later.get((name, labels), value))
        except ValueError:
            base, nxt = 0.0, 0.0
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        counter = types.get(name) == "counter" or types.get(family) in ("counter", "histogram", "summary") and name != family
        delta = 0.0 if nxt == base or nxt != nxt else (nxt - base) / (15.0 if counter else 1.0)
        for k, copy in enumerate(copies):
            out.append(("sample", (f"{name}{copy}", base, delta, counter, k)))
    return out


class Payloads:
    def __init__(self, cpus):
        self.parts = template(cpus)
        self.started = time.time()
        self.samples = sum(1 for kind, _ in self.parts if kind == "sample")

    def render(self, instance, salt):
        elapsed = time.time() - self.started
        tick = int(elapsed)
        lines = [f'ec2_instance_info{{instance_id="{instance}"}} 1']
        for kind, part in self.parts:
            if kind == "text":
                lines.append(part)
                continue
            key, base, delta, counter, k = part
            if delta == 0.0:
                value = base
            elif counter:
                value = base + elapsed * abs(delta) * (1.0 + ((salt + k) % 7) / 10.0)
            else:
                value = base + delta * ((tick + salt + k) % 3)
            lines.append(f"{key} {value!r}")
        return ("\n".join(lines) + "\n").encode()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("map")
    parser.add_argument("--cpus", type=int, default=36)
    args = parser.parse_args()
    with open(args.map) as f:
        targets = json.load(f)
    payloads = Payloads(args.cpus)
    print(f"{payloads.samples + 1} samples per payload, {len(targets)} addresses", file=sys.stderr, flush=True)

    def handler(instance, salt):
        async def handle(reader, writer):
            try:
                while True:
                    request = await reader.readuntil(b"\r\n\r\n")
                    if not request:
                        break
                    body = payloads.render(instance, salt)
                    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
                    writer.write(head + body)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        return handle

    servers = []
    for salt, (address, instance) in enumerate(targets.items()):
        host, port = address.rsplit(":", 1)
        if not ipaddress.ip_address(host).is_loopback:
            sys.exit(f"{host} is not a loopback address")
        servers.append(await asyncio.start_server(handler(instance, salt), host, int(port), backlog=64))
    print("listening", file=sys.stderr, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
