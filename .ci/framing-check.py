#!/usr/bin/env python3
"""The gateway's framing decisions against the Python h11 library's.

    python3 .ci/framing-check.py target/debug/portcullis [CASES] [SEED]

Generates a corpus of HTTP/1.1 requests, valid and crafted (request lines, header
fields, Content-Length and Transfer-Encoding variants, chunk lines, trailers, pipelined
requests), sends each to the gateway on its own connection, and compares what reached
the upstream with what h11 reads in the same bytes. The upstream is h11 too, so it also
checks what the gateway writes.

Each case carries its number in an `X-Case` field, so that what reaches the upstream
is matched to its case however late it arrives. Fails when, for any case:
- the gateway forwards a request head that h11 does not read (it refuses it, or it
  comes after something h11 refuses);
- the gateway forwards a head whose method differs from h11's reading, or a body it read
  to its end whose length differs from h11's (h11 reading it whole, or not at all);
- h11 refuses what the gateway sent upstream.
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

def case_of(request) -> str:
    """The `X-Case` field of an h11 request: `N.1` for a case's first request, `N.2` for
    the one pipelined after it."""
    return dict(request.headers).get(b"x-case", b"?").decode(errors="replace")


class Upstream:
    """Records each request head it receives, with the case it belongs to (its `X-Case`
    field), its method, and its body length once the body has ended (None until then);
    answers 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = {}
        self.faults = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def take(self):
        with self.lock:
            received, self.received = self.received, {}
            faults, self.faults = self.faults, []
        return received, faults

    def accept(self):
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        current = None
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
                        current = [event.method.decode(), 0, None]
                        with self.lock:
                            self.received.setdefault(case_of(event), []).append(current)
                    elif isinstance(event, h11.Data):
                        current[1] += len(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        with self.lock:
                            current[2] = current[1]
                        try:
                            answer = h.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                            if current[0] != "HEAD":
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
    """The request heads h11 reads in `case`, before an error or the end, by their
    `X-Case` field: each as [method, bytes of body, body length or None when the body
    did not end]."""
    h = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    h.receive_data(case)
    requests, current = {}, None
    while True:
        try:
            event = h.next_event()
        except h11.RemoteProtocolError:
            return requests
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return requests
        if isinstance(event, h11.Request):
            current = [event.method.decode(), 0, None]
            requests[case_of(event)] = current
        elif isinstance(event, h11.Data):
            current[1] += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            current[2] = current[1]
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
         "GET /next HTTP/1.1\r\nHost: a\r\nX-Case: {case}.2\r\nConnection: close\r\n\r\n",
         "POST /next HTTP/1.1\r\nHost: a\r\nX-Case: {case}.2\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"]
EXTRA = ["X-A: 1", "X-A: 1", "X-A:", "X_A: 1", "X A: 1", "X-A : 1", "X-A:\x7f", "X-A: \x01",
         "X-A: caf\xe9", ": empty", "X-A", "Expect: 100-continue", "Connection: keep-alive",
         "Connection: close, Upgrade", "Upgrade: websocket"]


def chunked_body(rng, mode: str) -> str:
    """A chunked body: "clean", with "one" part crafted (a size line, a chunk's length or
    end, the last chunk, or the trailers), or "wild", every part drawn from the pools."""
    crafted = rng.choice(["size", "length", "end", "last", "trailer"]) if mode == "one" else None
    part = lambda name: mode == "wild" or crafted == name
    chunks = rng.randint(1 if crafted in ("size", "length", "end") else 0, 3)
    out = ""
    for index in range(chunks):
        mine = index == chunks - 1 or mode == "wild"
        size = rng.choice([1, 2, 5, 16, 255])
        line = rng.choice(SIZE_LINES) if part("size") and mine else "{x}"
        actual = size + rng.choice([-1, 1]) if part("length") and mine else size
        out += line.format(x=f"{size:x}", X=f"{size:X}") + "\r\n"
        out += "d" * max(actual, 0)
        out += rng.choice(CHUNK_ENDS) if part("end") and mine else "\r\n"
    last = rng.choice(["00", "0;e", "0 ", "", "0\r\n0"]) if part("last") else "0"
    out += last + "\r\n"
    out += rng.choice(TRAILERS) if part("trailer") else ""
    out += "\r\n"
    return out


def case(rng, number: int) -> bytes:
    # Most cases change one thing in a clean request; the rest change many.
    wild = rng.random() < 0.3
    change = rng.choice(["method", "target", "version", "eol", "host", "length",
                         "coding", "chunks", "extra", "after", "none"])
    pick = lambda part, pool, clean: rng.choice(pool) if wild or change == part else clean

    method = pick("method", METHODS, rng.choice(["POST", "PUT", "PATCH", "GET"]))
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
        body = chunked_body(rng, "wild" if wild else "one" if change == "chunks" else "clean")
    if wild or change == "extra":
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(EXTRA))
    after = pick("after", AFTER, "").format(case=number)
    # A request followed by another is kept alive more often, so that the second is read.
    if rng.random() < (0.3 if after.startswith(("GET", "POST")) else 0.9):
        fields.append("Connection: close")
    rng.shuffle(fields)
    # First, so that the gateway has read it whenever it forwards the head.
    fields.insert(0, f"X-Case: {number}.1")
    head = f"{method}{sep}{target}{sep}{version}{eol}" + "".join(f + eol for f in fields) + eol
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
    cases = [case(rng, number) for number in range(count)]
    upstream = Upstream()
    answers = []
    with tempfile.TemporaryDirectory() as scratch:
        gateway, addr = start_gateway(binary, scratch, upstream.port)
        try:
            for data in cases:
                answers.append(send(addr, data))
            time.sleep(1)  # what the gateway sent upstream last reaches the upstream
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    received, faults = upstream.take()
    failures = [(None, b"", b"", faults)] if faults else []
    forwarded = refused_by_both = stricter = 0
    for number, data in enumerate(cases):
        theirs = h11_reads(data)
        ours = {key: heads for key, heads in received.items() if key.split(".")[0] == str(number)}
        problems = []
        for key, heads in ours.items():
            its = theirs.get(key)
            for mine in heads:
                # A body the gateway read to its end must be the one h11 reads; the
                # gateway may cut one that h11 reads whole, never the other way round.
                if its is None:
                    problems.append(f"forwarded {key} {mine} where h11 reads no such request")
                elif mine[0] != its[0] or (mine[2] is not None and mine[2] != its[2]):
                    problems.append(f"forwarded {key} {mine} where h11 reads {its}")
        if problems:
            failures.append((number, data, answers[number], problems))
        forwarded += sum(len(heads) for heads in ours.values())
        if not ours and not theirs:
            refused_by_both += 1
        if len(ours) < len(theirs):
            stricter += 1
    strays = [key for key in received if key.split(".")[0] not in {str(n) for n in range(count)}]
    if strays:
        failures.append((None, b"", b"", [f"forwarded requests of no case: {strays}"]))
    for number, data, answer, problems in failures[:20]:
        print(f"case {number}: {data!r}")
        print(f"  gateway answered: {answer[:120]!r}")
        for problem in problems:
            print(f"  {problem}")
    print(f"{count} cases (seed {seed}): {forwarded} request heads forwarded, {refused_by_both} cases "
          f"refused by both, {stricter} where the gateway refused what h11 reads, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
