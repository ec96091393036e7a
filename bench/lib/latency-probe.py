#!/usr/bin/env python3
"""Fixed-rate HTTP/1.1 latency probe for bench/run (standard library only).

wrk drives a closed loop as fast as it can; its latency figures are latencies at
saturation. This probe instead *schedules* requests at a fixed rate (open loop:
request i is due at start + i/rate, whatever happened to earlier requests) over
a small pool of keep-alive connections, and reports percentiles of the time from
writing a request to having read its whole response.

Timing notes:
  * asyncio sleeps with millisecond granularity, so a request may leave up to
    ~1 ms after its due time; the due-time lag is reported separately
    (`lag_p99_us`) and is *not* part of the latency. Sending late requests in a
    burst keeps the average rate exact.
  * The probe's own Python overhead is part of every figure, for every path
    alike; bench/run reports each path minus the direct path, which cancels most
    of it.

Output: one line of `key=value` pairs on stdout, e.g.
  PROBE sent=5000 ok=5000 unexpected=0 errors=0 rate=999.8 p50_us=210.4 p99_us=390.1 ...

usage: latency-probe.py --host 127.0.0.1 --port 8080 --path /stream [--method GET]
           [--header 'Name: value']... [--tokens-file FILE] [--rate 1000]
           [--seconds 5] [--connections 8] [--expect 200]
"""
import argparse
import asyncio
import sys
import time


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer


async def open_conn(host: str, port: int) -> Conn:
    reader, writer = await asyncio.open_connection(host, port)
    return Conn(reader, writer)


async def read_response(reader: asyncio.StreamReader):
    """Read one HTTP/1.1 response; return (status, must_close)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before status line")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError(f"bad status line {status_line!r}")
    status = int(parts[1])
    length = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise ConnectionError("connection closed inside headers")
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection":
            close = value == b"close"
    if chunked:
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)
    elif length is None and status not in (204, 304) and not (100 <= status < 200):
        await reader.read()  # body delimited by close
        close = True
    return status, close


def percentile(sorted_values, pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, int(round(pct / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(args) -> int:
    head_lines = [f"{args.method} {args.path} HTTP/1.1", f"Host: {args.host}:{args.port}"]
    head_lines += args.header
    tokens = None
    if args.tokens_file:
        with open(args.tokens_file, encoding="ascii") as fh:
            tokens = [line.strip() for line in fh if line.strip()]
        if not tokens:
            print(f"latency-probe: no tokens in {args.tokens_file}", file=sys.stderr)
            return 2
    static_request = ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1")

    def request_bytes(i: int) -> bytes:
        if tokens is None:
            return static_request
        token = tokens[i % len(tokens)]
        lines = head_lines + [f"Authorization: Bearer {token}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(await open_conn(args.host, args.port))

    latencies = []
    lags = []
    counts = {"ok": 0, "unexpected": 0, "errors": 0}
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        conn = await pool.get()  # a Conn, or None for a slot whose connection died
        try:
            if conn is None:
                conn = await open_conn(args.host, args.port)
            data = request_bytes(i)
            lags.append(loop.time() - due)
            t0 = time.perf_counter()
            conn.writer.write(data)
            status, close = await asyncio.wait_for(read_response(conn.reader), args.timeout)
            latencies.append(time.perf_counter() - t0)
            if status == args.expect:
                counts["ok"] += 1
            else:
                counts["unexpected"] += 1
            if close:
                conn.writer.close()
                conn = None
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            counts["errors"] += 1
            if conn is not None:
                conn.writer.close()
            conn = None
        finally:
            pool.put_nowait(conn)

    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    tasks = set()
    start = loop.time()
    for i in range(total):
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=args.timeout + 1)
    elapsed = loop.time() - start
    while not pool.empty():
        conn = pool.get_nowait()
        if conn is not None:
            conn.writer.close()

    latencies.sort()
    lags.sort()
    sent = len(latencies) + counts["errors"]
    fields = {
        "sent": sent,
        "ok": counts["ok"],
        "unexpected": counts["unexpected"],
        "errors": counts["errors"],
        "rate": f"{sent / elapsed:.1f}" if elapsed > 0 else "0",
        "p50_us": f"{percentile(latencies, 50) * 1e6:.1f}",
        "p90_us": f"{percentile(latencies, 90) * 1e6:.1f}",
        "p99_us": f"{percentile(latencies, 99) * 1e6:.1f}",
        "max_us": f"{(latencies[-1] if latencies else float('nan')) * 1e6:.1f}",
        "lag_p99_us": f"{percentile(lags, 99) * 1e6:.1f}",
    }
    print("PROBE " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return 0 if counts["errors"] == 0 and counts["unexpected"] == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description="fixed-rate HTTP/1.1 latency probe")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[], help="extra header line 'Name: value'")
    p.add_argument("--tokens-file", help="one bearer token per line, used round-robin")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")
    p.add_argument("--seconds", type=float, default=5.0, help="probe duration (default 5)")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    p.add_argument("--expect", type=int, default=200, help="expected status code (default 200)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds")
    args = p.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.connections <= 0:
        p.error("rate, seconds and connections must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
