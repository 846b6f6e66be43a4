#!/usr/bin/env python3
"""Idle keep-alive clients for bench/memory.sh: opens CONNECTIONS connections to a proxy,
sends one request on each and reads its answer, then keeps them all open and idle.

    python3 bench/idle_clients.py PORT CONNECTIONS http1|h2 PIDS...

It prints the proxy's resident memory (the sum over PIDS, from /proc) before, with half
and then all of the connections idle, right after the clients close, and 30 s later, as
one JSON object. Per connection is the growth over all of them; each one more is the
growth from half to all, which leaves out what a proxy sets up once, whatever the count
(an allocator's thread caches, say).
HTTP/2 is spoken with prior knowledge (h2c): the preface, an empty SETTINGS, one GET on
stream 1 (HPACK from the static table), and the ACK of the server's SETTINGS.
"""

import json
import socket
import struct
import sys
import time

PORT, CONNECTIONS, PROTOCOL = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PIDS = [int(pid) for pid in sys.argv[4:]]
HOST = "127.0.0.1"
# How long the connections stay idle before memory is read: past one idle-watchdog tick
# (3.75 s by default), when portcullis frees an idle connection's buffers, and past
# jemalloc's dirty-page decay (10 s), by which those pages go back to the system.
IDLE_WAIT = 25


def rss_kib() -> int:
    total = 0
    for pid in PIDS:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request() -> bytes:
    authority = f"{HOST}:{PORT}".encode()
    # :method GET (2), :scheme http (6), :path / (4), :authority as a literal of name 1.
    block = bytes([0x82, 0x86, 0x84, 0x41, len(authority)]) + authority
    return (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(0x4, 0x0, 0, b"")
        + frame(0x1, 0x5, 1, block)
    )


def read_h2_answer(conn: socket.socket) -> None:
    """Reads frames until stream 1 ends, acknowledging the server's SETTINGS."""
    buffered = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        while len(buffered) >= 9:
            length = int.from_bytes(buffered[:3], "big")
            if len(buffered) < 9 + length:
                break
            kind, flags = buffered[3], buffered[4]
            stream = int.from_bytes(buffered[5:9], "big") & 0x7FFFFFFF
            buffered = buffered[9 + length :]
            if kind == 0x4 and not flags & 0x1:
                conn.sendall(frame(0x4, 0x1, 0, b""))
            if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:
                return
            if kind == 0x7:
                raise RuntimeError("the server sent GOAWAY")
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffered += chunk
    raise RuntimeError("no answer on stream 1")


def read_http1_answer(conn: socket.socket) -> None:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("the body was cut short")
        body += chunk


def main() -> None:
    before = rss_kib()
    request = (
        h2_request()
        if PROTOCOL == "h2"
        else f"GET / HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n\r\n".encode()
    )
    connections = []
    half = CONNECTIONS // 2
    half_idle = 0
    for count in (half, CONNECTIONS - half):
        for _ in range(count):
            conn = socket.create_connection((HOST, PORT), timeout=10)
            conn.sendall(request)
            if PROTOCOL == "h2":
                read_h2_answer(conn)
            else:
                read_http1_answer(conn)
            connections.append(conn)
        # portcullis lets go of an idle connection's buffers and exchange state at the first
        # tick of its idle watchdog: a quarter of header_read_timeout (15 s by default).
        time.sleep(IDLE_WAIT)
        if len(connections) == half:
            half_idle = rss_kib()
    idle = rss_kib()
    for conn in connections:
        conn.close()
    time.sleep(1)
    closed = rss_kib()
    time.sleep(29)
    settled = rss_kib()
    print(
        json.dumps(
            {
                "connections": CONNECTIONS,
                "before_kib": before,
                "idle_kib": idle,
                "per_connection_bytes": round((idle - before) * 1024 / CONNECTIONS),
                "each_more_bytes": round((idle - half_idle) * 1024 / (CONNECTIONS - half)),
                "closed_1s_kib": closed,
                "closed_30s_kib": settled,
            }
        )
    )


if __name__ == "__main__":
    main()
