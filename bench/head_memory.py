#!/usr/bin/env python3
"""What many unfinished request heads cost the gateway in memory, with and without a
tight `limits.header_memory`.

    cargo build --release && python3 bench/head_memory.py

Starts the release binary in front of its built-in echo upstream, then opens CONNECTIONS
connections that each send HEAD bytes of an unfinished head (no blank line) and wait.
With FINISH=1 each head is finished instead, its answer read, and the connection kept
open, idle: what a large head leaves behind on a kept-alive connection.
For each budget it prints the gateway's resident memory before and after, what
`portcullis_header_memory_bytes` says is held, how many connections the gateway cut, and
whether an ordinary request is still answered.
"""

import os
import re
import socket
import sys
import tempfile
import time
import urllib.request

import gateway as bench_gateway

CONNECTIONS = int(os.environ.get("CONNECTIONS", "1370"))
HEAD = int(os.environ.get("HEAD", "120000"))
# The first budget is large enough never to cut: the gateway as it was without one.
BUDGETS = os.environ.get("BUDGETS", "4GiB 64MiB").split()
FINISH = os.environ.get("FINISH") == "1"
BINARY = os.environ.get("PORTCULLIS", "target/release/portcullis")
PORT = 18095
ADMIN = 18096

CONFIG = """listen: [{{ addr: 127.0.0.1:{port} }}]
admin: {{ addr: 127.0.0.1:{admin} }}
upstreams: {{ echo: {{ targets: ["builtin:echo"] }} }}
routes: [{{ id: all, upstream: echo }}]
policy: {{ files: [policy.yaml] }}
limits: {{ header_read_timeout: 60s, header_memory: {budget} }}
"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def ordinary_request() -> str:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        return conn.recv(100).split(b"\r\n", 1)[0].decode(errors="replace")


def closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def measure(budget: str, scratch: str) -> None:
    config = CONFIG.format(port=PORT, admin=ADMIN, budget=budget)
    gateway = bench_gateway.start(BINARY, scratch, config, PORT)
    conns = []
    try:
        ordinary_request()
        before = rss_mib(gateway.pid)
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Fill: " + b"x" * HEAD
        if FINISH:
            head += b"\r\n\r\n"
        for _ in range(CONNECTIONS):
            conn = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            try:
                conn.sendall(head)
                if FINISH:
                    conn.recv(65536)
            except OSError:
                pass  # cut while sending
            conns.append(conn)
        time.sleep(2)  # let the gateway read what was sent
        after = rss_mib(gateway.pid)
        held = metric("portcullis_header_memory_bytes") / (1 << 20)
        cuts = int(metric("portcullis_header_memory_cuts_total"))
        cut = sum(closed(conn) for conn in conns)
        status = ordinary_request()
        print(
            f"{budget:>8} {before:>10.1f} {after:>10.1f} {held:>10.1f} {cuts:>6} {cut:>7}  {status}"
        )
    finally:
        for conn in conns:
            conn.close()
        gateway.terminate()
        gateway.wait(timeout=10)


def main() -> int:
    kind = "a finished head, then idle" if FINISH else "an unfinished head"
    print(f"{CONNECTIONS} connections, each with {HEAD} bytes of {kind}")
    print(f"{'budget':>8} {'RSS MiB':>10} {'after':>10} {'held MiB':>10} {'cuts':>6} {'closed':>7}  next request")
    with tempfile.TemporaryDirectory() as scratch:
        for budget in BUDGETS:
            measure(budget, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
