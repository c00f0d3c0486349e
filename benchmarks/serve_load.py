"""Load test of ``maskconver serve`` on loopback: throughput, p50 / p99 latency, 503s, RSS.

Starts ``python -m maskconver serve`` (127.0.0.1, a free port) on ``--checkpoint`` (torch) or
``--model`` (an exported .onnx, onnxruntime), warms it up with one request, then runs
``--clients`` threads that each send ``--requests`` predict requests (one keep-alive connection
per client, a synthetic ``--size`` x ``--size`` PNG as the raw body, the next request as soon as
the last is answered, also after a 503), ``--rounds`` times, stopping early at ``--time-limit``
seconds in all. Prints requests/s (answered 200), p50 / p99 latency of the 200s, the count of
503s (``--max-concurrency`` refusals) and other statuses, and the server's RSS after the warm-up
and after each round (plus its peak, VmHWM): flat after the first round means no growth.
Everything stays on 127.0.0.1 and is bounded in count and time.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --checkpoint CKPT --threads 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --model m.onnx --threads 1
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def scene_png(size: int) -> bytes:
    from maskconver.data.synthetic import SyntheticPanoptic

    image = SyntheticPanoptic(1, seed=3, min_size=size, max_size=size)[0].image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def request(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - start


def wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def client(
    port: int, body: bytes, count: int, deadline: float, out: list[tuple[int, float]]
) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            out.append(request(conn, body))
        except (OSError, http.client.HTTPException):
            out.append((-1, 0.0))
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint folder (torch)")
    source.add_argument("--model", help="exported .onnx (onnxruntime)")
    parser.add_argument("--threads", type=int, default=1, help="the server's --threads")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--max-concurrency", type=int, default=4, help="the server's limit")
    parser.add_argument("--size", type=int, default=320, help="side of the square test image")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of the whole load")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds of load, at most")
    args = parser.parse_args()

    port = free_port()
    flags = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
    command = [
        sys.executable, "-m", "maskconver", "serve", *flags, "--host", HOST, "--port", str(port),
        "--threads", str(args.threads), "--max-concurrency", str(args.max_concurrency),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        body = scene_png(args.size)
        warm = http.client.HTTPConnection(HOST, port, timeout=60)
        status, first = request(warm, body)
        warm.close()
        assert status == 200, f"warm-up request answered {status}"
        rss_before, _ = rss_mb(server.pid)
        results: list[list[tuple[int, float]]] = []
        rss_rounds: list[float] = []
        deadline = time.monotonic() + args.time_limit
        start = time.perf_counter()
        for _ in range(args.rounds):
            outs: list[list[tuple[int, float]]] = [[] for _ in range(args.clients)]
            threads = [
                threading.Thread(target=client, args=(port, body, args.requests, deadline, out))
                for out in outs
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results.extend(outs)
            rss_rounds.append(rss_mb(server.pid)[0])
        seconds = time.perf_counter() - start
        rss_peak = rss_mb(server.pid)[1]
    finally:
        server.terminate()
        server.wait(30)

    flat = [r for out in results for r in out]
    ok = [latency for status, latency in flat if status == 200]
    statuses: dict[int, int] = {}
    for status, _ in flat:
        statuses[status] = statuses.get(status, 0) + 1
    backend = "torch" if args.checkpoint else "onnxruntime"
    print(f"backend {backend}, {args.threads} thread(s), image {args.size}x{args.size} PNG "
          f"({len(body) / 1024:.0f} KB), {args.rounds} x {args.clients} clients x {args.requests} "
          f"requests, "
          f"--max-concurrency {args.max_concurrency}")  # fmt: skip
    print(f"first request {1000 * first:.0f} ms; {len(flat)} requests in {seconds:.1f} s")
    print(f"throughput {len(ok) / seconds:.2f} req/s (200s)")
    if ok:
        print(
            f"latency p50 {1000 * statistics.median(ok):.0f} ms, "
            f"p99 {1000 * percentile(ok, 0.99):.0f} ms (200s, client side)"
        )
    print(f"statuses {dict(sorted(statuses.items()))}; 503: {statuses.get(503, 0)}")
    rounds = ", ".join(f"{mb:.0f}" for mb in rss_rounds)
    print(f"server RSS {rss_before:.0f} MB after warm-up; after each round {rounds} MB "
          f"(peak {rss_peak:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
