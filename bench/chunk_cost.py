#!/usr/bin/env python3
"""What one request body costs the gateway in CPU, by how it is chunked.

    cargo build --release && python3 bench/chunk_cost.py

Starts the release binary in front of its built-in echo upstream and sends 1 MiB bodies
over loopback: in one chunk, in 64-byte chunks, and in one-byte chunks. For each, the
gateway's CPU time (user + system, from /proc) is read before and after each round of
REQUESTS requests; the median round, per request, is printed, with its ratio to the one-chunk body. One-byte chunks
are refused once their pieces pass what their bytes pay for (see `FREE_PIECES` in
src/proxy/client_http1.rs), which is what bounds their cost.
"""

import os
import socket
import statistics
import sys
import tempfile
import time

import gateway as bench_gateway

ROUNDS = int(os.environ.get("ROUNDS", "5"))
# Requests per round: CPU time is read in clock ticks (10 ms), too coarse for one.
REQUESTS = int(os.environ.get("REQUESTS", "20"))
BINARY = os.environ.get("PORTCULLIS", "target/release/portcullis")
PORT = 18093
ADMIN = 18094
MIB = 1 << 20

CONFIG = f"""listen: [{{ addr: 127.0.0.1:{PORT} }}]
admin: {{ addr: 127.0.0.1:{ADMIN} }}
upstreams: {{ echo: {{ targets: ["builtin:echo"] }} }}
routes: [{{ id: all, upstream: echo }}]
policy: {{ files: [policy.yaml] }}
limits: {{ max_body_size: 2MiB }}
"""


def body(size: int) -> bytes:
    chunk = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    return chunk * (MIB // size) + b"0\r\n\r\n"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(payload: bytes) -> str:
    head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as conn:
        try:
            conn.sendall(head + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was read
        answer = b""
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        gateway = bench_gateway.start(BINARY, scratch, CONFIG, PORT)
        try:
            results = {}
            for size in (MIB, 64, 1):
                payload = body(size)
                spent, status = [], ""
                for _ in range(ROUNDS):
                    before = cpu_seconds(gateway.pid)
                    for _ in range(REQUESTS):
                        status = send(payload)
                    time.sleep(0.05)  # let the last connection's task finish
                    spent.append((cpu_seconds(gateway.pid) - before) / REQUESTS)
                results[size] = (statistics.median(spent), status)
            base = max(results[MIB][0], 1 / os.sysconf("SC_CLK_TCK") / REQUESTS)
            print(f"{'chunks of':>10} {'CPU ms':>8} {'× one chunk':>12}  answer")
            for size, (seconds, status) in results.items():
                print(f"{size:>10} {seconds * 1000:>8.1f} {seconds / base:>12.1f}  {status}")
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
