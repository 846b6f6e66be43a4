#!/usr/bin/env python3
"""The gateway's framing decisions against the Python h11 library's.

    python3 .ci/framing-check.py target/debug/portcullis [CASES] [SEED]

Generates a corpus of HTTP/1.1 requests, valid and crafted (request lines, header
fields, Content-Length and Transfer-Encoding variants, chunk lines, trailers, pipelined
requests), sends each to the gateway on its own connection, and compares what reached
the upstream with what h11 reads in the same bytes. The upstream is h11 too, so it also
checks what the gateway writes.

Fails when, for any case:
- the gateway forwards a request that h11 rejects (or does not see whole);
- the gateway forwards a request whose method or body length differs from h11's reading;
- h11 rejects what the gateway sent upstream.
The gateway may refuse what h11 accepts: it is meant to be stricter.
"""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import h11

CONFIG = """listen: [{{ addr: 127.0.0.1:0 }}]
admin: {{ addr: 127.0.0.1:0 }}
upstreams: {{ app: {{ targets: ["http://127.0.0.1:{port}"] }} }}
routes: [{{ id: all, upstream: app }}]
policy: {{ files: [policy.yaml] }}
"""
POLICY = "rules:\n  - { id: all, effect: allow }\n"


# --- the upstream: h11 reads what the gateway sends ---------------------------------

class Upstream:
    """Records each whole request it receives as (method, body length); answers 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = []
        self.faults = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def take(self):
        with self.lock:
            received, self.received = self.received, []
            faults, self.faults = self.faults, []
        return received, faults

    def accept(self):
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        method, body = None, 0
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                h.receive_data(data)
                while True:
                    try:
                        event = h.next_event()
                    except h11.RemoteProtocolError as err:
                        if data:
                            # Not a cut: the gateway wrote bytes h11 refuses.
                            with self.lock:
                                self.faults.append(f"h11 refused what the gateway sent upstream: {err}")
                        return
                    if event is h11.NEED_DATA:
                        break
                    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                        return
                    if isinstance(event, h11.Request):
                        method, body = event.method.decode(), 0
                    elif isinstance(event, h11.Data):
                        body += len(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        with self.lock:
                            self.received.append((method, body))
                        try:
                            answer = h.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                            if method != "HEAD":
                                answer += h.send(h11.Data(data=b"ok"))
                            answer += h.send(h11.EndOfMessage())
                            conn.sendall(answer)
                            h.start_next_cycle()
                        except (h11.LocalProtocolError, OSError):
                            return
                if not data:
                    return


# --- h11's reading of a case ----------------------------------------------------------

def h11_reads(case: bytes):
    """The whole requests h11 reads in `case`, in order, before an error or the end."""
    h = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    h.receive_data(case)
    requests, method, body = [], None, 0
    while True:
        try:
            event = h.next_event()
        except h11.RemoteProtocolError:
            return requests
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return requests
        if isinstance(event, h11.Request):
            method, body = event.method.decode(), 0
        elif isinstance(event, h11.Data):
            body += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            requests.append((method, body))
            h.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            h.send(h11.EndOfMessage())
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                return requests  # the request asked to close: nothing after it is read


# --- the corpus -----------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
           "get", "G ET", "GET\x00", "PO\x7fST", "POST ", "X" * 40]
TARGETS = ["/", "/a", "/a?b=c", "/a/../b", "/%2e%2e/x", "http://a/b", "*", "/a b",
           "/a\tb", "/\x80", "/a#frag", "//x", "/a\x00", "/%", "a", "/" + "x" * 3000]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 ",
            "HTTP/01.1", "HTTP/1", "HTTP/1.10", "HTTP/1.1\x00"]
EOLS = ["\r\n"] * 12 + ["\n", "\r", "\r\r\n", "\n\r"]
HOSTS = ["Host: a", "Host: a", "Host: a", "Host:a", "Host:\ta", "Host : a", " Host: a",
         "Host: a\r\nHost: b", "Host: a b", "Host: a:99999", "Host:", "Ho\x00st: a",
         "Host: a\r\n folded", "HOST: a", "Host: [::1]", "Host: a@b"]
LENGTHS = ["{n}", "{n}", "{n}", "0{n}", "+{n}", "-{n}", "{n}, {n}", "{n},{m}", " {n} ",
           "0x{n}", "{n} {n}", "", "99999999999999999999", "{n}\x00", "{n}.0", "{n}\r\n Content-Length: {n}",
           "{n}\r\nContent-Length: {n}", "{n}\r\nContent-Length: {m}", "{n}\t"]
CODINGS = ["chunked", "chunked", "chunked", "Chunked", "CHUNKED", " chunked", "chunked ",
           "chunked, chunked", "identity, chunked", "gzip, chunked", "chunked;q=1",
           "xchunked", "\x0bchunked", "chunked\x00", "chunked\r\nTransfer-Encoding: chunked",
           "chunked\r\n Transfer-Encoding: chunked", "chunked,", ",chunked", "gzip",
           "identity", "chunked\r\nContent-Length: 3"]
SIZE_LINES = ["{x}", "{x}", "{x}", "{X}", "0{x}", "{x} ", "{x}\t", " {x}", "{x};e",
              "{x};e=v", "{x};e=\"q v\"", "{x} ;e", "{x};", "{x};e=\"", "+{x}", "-{x}",
              "0x{x}", "FFFFFFFFFFFFFFFFF", "{x}\x00", "{x};e\x00", "{x}g"]
CHUNK_ENDS = ["\r\n"] * 8 + ["\n", "", "XX", "\r", " \r\n"]
TRAILERS = ["", "", "", "X-T: 1\r\n", "X-T : 1\r\n", "X-T:\x001\r\n", " X-T: 1\r\n",
            "GET / HTTP/1.1\r\n", "X-T: 1\n", "Content-Length: 5\r\n", "X-T\r\n"]
AFTER = ["", "", "", "garbage", "\r\n",
         "GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
         "POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"]
EXTRA = ["X-A: 1", "X-A: 1", "X-A:", "X_A: 1", "X A: 1", "X-A : 1", "X-A:\x7f", "X-A: \x01",
         "X-A: caf\xe9", ": empty", "X-A", "Expect: 100-continue", "Connection: keep-alive",
         "Connection: close, Upgrade", "Upgrade: websocket"]


def chunked_body(rng, clean: bool) -> str:
    out = ""
    for _ in range(rng.randint(0, 3)):
        size = rng.choice([1, 2, 5, 16, 255])
        line = "{x}" if clean else rng.choice(SIZE_LINES)
        actual = size if clean or rng.random() < 0.8 else size + rng.choice([-1, 1])
        out += line.format(x=f"{size:x}", X=f"{size:X}") + "\r\n"
        out += "d" * max(actual, 0)
        out += "\r\n" if clean else rng.choice(CHUNK_ENDS)
    last = "0" if clean or rng.random() < 0.7 else rng.choice(["00", "0;e", "0 ", "", "0\r\n0"])
    out += last + "\r\n"
    out += "" if clean else rng.choice(TRAILERS)
    out += "\r\n"
    return out


def case(rng) -> bytes:
    # Most cases change one thing in a clean request; the rest change many.
    wild = rng.random() < 0.3
    change = rng.choice(["method", "target", "version", "eol", "host", "length",
                         "coding", "chunks", "extra", "after", "none"])
    pick = lambda part, pool, clean: rng.choice(pool) if wild or change == part else clean

    method = pick("method", METHODS, rng.choice(["POST", "PUT", "GET"]))
    target = pick("target", TARGETS, "/")
    version = pick("version", VERSIONS, "HTTP/1.1")
    sep = " " if rng.random() < 0.95 else rng.choice(["  ", "\t"])
    eol = pick("eol", EOLS, "\r\n")
    fields = [pick("host", HOSTS, "Host: a")]
    n = rng.choice([0, 1, 3, 10])
    framing = rng.choice(["length", "coding", "none"]) if wild else (
        "length" if change == "length" else "coding" if change in ("coding", "chunks") else
        rng.choice(["length", "coding", "none"]))
    body = ""
    if framing == "length":
        value = pick("length", LENGTHS, "{n}")
        fields.append("Content-Length: " + value.format(n=n, m=n + 1))
        body = "b" * (n if rng.random() < 0.9 else n + rng.choice([-1, 2]))
    elif framing == "coding":
        fields.append("Transfer-Encoding: " + pick("coding", CODINGS, "chunked"))
        body = chunked_body(rng, clean=not (wild or change == "chunks"))
    if wild or change == "extra":
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(EXTRA))
    if rng.random() < 0.9:
        fields.append("Connection: close")
    rng.shuffle(fields)
    head = f"{method}{sep}{target}{sep}{version}{eol}" + "".join(f + eol for f in fields) + eol
    after = pick("after", AFTER, "")
    return (head + body + after).encode("latin-1")


# --- the gateway's reading of a case --------------------------------------------------

def send(addr, data: bytes) -> bytes:
    """Sends `data` and reads until the gateway closes. A gateway still waiting for
    bytes after a moment gets the end of the stream instead."""
    answer = b""
    with socket.create_connection(addr, timeout=5) as conn:
        try:
            conn.sendall(data)
        except OSError:
            return answer
        conn.settimeout(0.3)
        half_closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                piece = conn.recv(65536)
            except socket.timeout:
                if half_closed:
                    continue
                conn.shutdown(socket.SHUT_WR)
                half_closed = True
                continue
            except OSError:
                break
            if not piece:
                break
            answer += piece
    return answer


def start_gateway(binary, scratch, upstream_port):
    with open(os.path.join(scratch, "gw.yaml"), "w") as config:
        config.write(CONFIG.format(port=upstream_port))
    with open(os.path.join(scratch, "policy.yaml"), "w") as policy:
        policy.write(POLICY)
    log = open(os.path.join(scratch, "log"), "w+")
    gateway = subprocess.Popen(
        [binary, "--log-format", "json", "run", "-c", os.path.join(scratch, "gw.yaml"),
         "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        log.seek(0)
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "listening":
                host, port = entry["addr"].rsplit(":", 1)
                return gateway, (host, int(port))
        time.sleep(0.05)
    gateway.kill()
    log.seek(0)
    sys.exit("the gateway did not start:\n" + log.read())


def main() -> int:
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    rng = random.Random(seed)
    cases = [case(rng) for _ in range(count)]
    upstream = Upstream()
    failures = []
    forwarded = refused_by_both = stricter = 0
    with tempfile.TemporaryDirectory() as scratch:
        gateway, addr = start_gateway(binary, scratch, upstream.port)
        try:
            for number, data in enumerate(cases):
                answer = send(addr, data)
                received, faults = upstream.take()
                expected = h11_reads(data)
                problems = list(faults)
                if len(received) > len(expected):
                    problems.append(f"forwarded {received[len(expected):]} that h11 does not read whole")
                for ours, theirs in zip(received, expected):
                    if ours != theirs:
                        problems.append(f"forwarded {ours} where h11 reads {theirs}")
                if problems:
                    failures.append((number, data, answer, problems))
                forwarded += len(received)
                if not received and not expected:
                    refused_by_both += 1
                if len(received) < len(expected):
                    stricter += 1
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    for number, data, answer, problems in failures[:20]:
        print(f"case {number}: {data!r}")
        print(f"  gateway answered: {answer[:120]!r}")
        for problem in problems:
            print(f"  {problem}")
    print(f"{count} cases (seed {seed}): {forwarded} requests forwarded, {refused_by_both} cases "
          f"refused by both, {stricter} where the gateway refused what h11 reads, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
