"""Bounded soak of a running spade-server: mixed valid, invalid and slow traffic at twice
its batch capacity, then checks that it recovered. Run by .ci/soak (which starts the
server); by hand: python3 .ci/soak.py --port P --pid PID [--seconds 60].

Traffic, all at once for --seconds:
* valid synthesize requests (a label PNG of the bundled model's ids) from 2 x max-batch
  closed-loop clients;
* invalid ones: garbage bodies, wrong content types, a declared body over the limit, an
  unknown model, truncated PNGs;
* slow clients: half a request line then silence, headers trickled a byte at a time, a
  body that stalls after its first bytes; each must be dropped by the server's timeouts.

Checks, from /proc/PID and the clients:
* peak RSS during the soak under --max-rss-mb;
* no 5xx, and every answer either 200 or a 4xx / 503 problem;
* after the load, p99 latency of sequential valid requests within 2x (+50 ms) of before;
* open file descriptors and threads, once idle, back to within a few of where they started;
* then SIGTERM with requests in flight: all of them answered 200, and the process exits.
"""
import argparse
import asyncio
import os
import random
import signal
import struct
import time
import zlib


def png_grey(width, height, pixel):
    raw = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


LABEL = png_grey(64, 64, lambda x, y: 0 if y < 24 else (7 if x < 32 else 10))


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_mb, threads, fds


async def request(port, method, path, headers=(), body=b"", timeout=120):
    """One HTTP/1.1 exchange on a fresh connection; returns (status, seconds)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)
        status = int(status_line.split()[1]) if status_line else 0
        return status, time.monotonic() - start
    finally:
        writer.close()


async def synthesize(port):
    return await request(port, "POST", "/v1/synthesize?seed=1",
                         [("Content-Type", "image/png")], LABEL)


INVALID = [
    ("POST", "/v1/synthesize", [("Content-Type", "image/png")], b"not a png"),
    ("POST", "/v1/synthesize", [("Content-Type", "text/plain")], b"hello"),
    ("POST", "/v1/synthesize", [("Content-Type", "image/png")], LABEL[:40]),
    ("POST", "/v1/synthesize?model=nope", [("Content-Type", "image/png")], LABEL),
    ("POST", "/v1/synthesize", [("Content-Type", "application/json")], b'{"label": 5}'),
    ("POST", "/v1/encode-style", [("Content-Type", "image/jpeg")], b"\xff\xd8\xff\x00"),
    ("DELETE", "/v1/models", [], None),
    ("GET", "/no/such/route", [], None),
]


async def oversize(port):
    """Declares a body far over the limit: must be refused without sending it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/synthesize HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 4000000000\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()


async def slow(port, kind):
    """A client that never finishes its request. Returns how it ended: the server hung up
    ("dropped"), answered it (a 408 for a stalled body), or kept it open for 2 minutes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "half-line":
            writer.write(b"POST /v1/synth")
        elif kind == "body-stall":
            writer.write(b"POST /v1/synthesize HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 100000\r\n\r\n" + LABEL[:100])
        await writer.drain()
        if kind == "trickle":
            # A byte every 0.2 s: headers that would take half an hour to arrive.
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        data = await asyncio.wait_for(reader.read(), 120)
        return "answered" if data else "dropped"
    except (ConnectionError, OSError):
        return "dropped"
    except asyncio.TimeoutError:
        return "kept open"
    finally:
        writer.close()


async def latencies(port, count):
    out = []
    for _ in range(count):
        status, seconds = await synthesize(port)
        assert status == 200, f"a valid request got {status}"
        out.append(seconds)
    out.sort()
    return out


def p99(values):
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-rss-mb", type=float, default=2048)
    args = parser.parse_args()
    port, pid = args.port, args.pid

    await latencies(port, 3)  # warm
    before = await latencies(port, 30)
    rss0, threads0, fds0 = proc_stats(pid)
    print(f"before: p99 {p99(before) * 1000:.0f} ms, rss {rss0:.0f} MiB, threads {threads0}, fds {fds0}")

    stop = asyncio.Event()
    statuses = {}
    peak = [rss0]
    deadline = time.monotonic() + args.seconds

    def count(status):
        statuses[status] = statuses.get(status, 0) + 1

    async def valid_client():
        while time.monotonic() < deadline:
            count((await synthesize(port))[0])

    async def invalid_client(seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            if rng.random() < 0.1:
                count(await oversize(port))
            else:
                method, path, headers, body = rng.choice(INVALID)
                count((await request(port, method, path, headers, body))[0])

    async def slow_client(kind):
        while time.monotonic() < deadline:
            outcome = await slow(port, kind)
            count(f"slow {kind} {outcome}")

    async def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc_stats(pid)[0])
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    clients = [valid_client() for _ in range(2 * args.max_batch)]
    clients += [invalid_client(i) for i in range(4)]
    clients += [slow_client(kind) for kind in ("half-line", "body-stall", "trickle") for _ in range(8)]
    await asyncio.gather(*clients)
    stop.set()
    await sampler

    await asyncio.sleep(2)
    after = await latencies(port, 30)
    # Idle threads of tokio's blocking pool (decoding runs there) exit after 10 s unused.
    await asyncio.sleep(12)
    rss1, threads1, fds1 = proc_stats(pid)
    print(f"load: {args.seconds:.0f} s, peak rss {peak[0]:.0f} MiB; answers {dict(sorted(statuses.items(), key=str))}")
    print(f"after: p99 {p99(after) * 1000:.0f} ms, rss {rss1:.0f} MiB, threads {threads1}, fds {fds1}")

    failures = []
    bad = {s: n for s, n in statuses.items() if isinstance(s, int) and (s >= 500 and s != 503 or s == 0)}
    if bad:
        failures.append(f"server errors or dropped answers: {bad}")
    kept = {s: n for s, n in statuses.items() if isinstance(s, str) and s.endswith("kept open")}
    if kept:
        failures.append(f"slow clients kept open: {kept}")
    if statuses.get(200, 0) == 0:
        failures.append("no valid request succeeded under load")
    if peak[0] > args.max_rss_mb:
        failures.append(f"peak RSS {peak[0]:.0f} MiB over the bound {args.max_rss_mb:.0f} MiB")
    if p99(after) > 2 * p99(before) + 0.05:
        failures.append(f"p99 did not recover: {p99(after) * 1000:.0f} ms after vs {p99(before) * 1000:.0f} ms before")
    if fds1 > fds0 + 4:
        failures.append(f"file descriptors leaked: {fds0} before, {fds1} after")
    if threads1 > threads0 + 2:
        failures.append(f"threads leaked: {threads0} before, {threads1} after")
    failures += await drain_on_sigterm(port, pid, args.max_batch)
    for failure in failures:
        print("FAIL:", failure)
    raise SystemExit(1 if failures else 0)


async def drain_on_sigterm(port, pid, clients):
    """SIGTERM with requests in flight: every one of them is answered 200, then the
    process exits (within its shutdown grace)."""
    in_flight = [asyncio.create_task(synthesize(port)) for _ in range(2 * clients)]
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGTERM)
    answers = [status for status, _ in await asyncio.gather(*in_flight)]
    deadline = time.monotonic() + 40
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    print(f"SIGTERM with {len(in_flight)} requests in flight: answers {answers}")
    failures = []
    if any(status != 200 for status in answers):
        failures.append(f"in-flight requests not drained: {answers}")
    if os.path.exists(f"/proc/{pid}") and not open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        failures.append("the server did not exit after SIGTERM")
    return failures


if __name__ == "__main__":
    asyncio.run(main())
