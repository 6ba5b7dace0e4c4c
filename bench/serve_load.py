"""Benchmark: ``transferlab serve`` under load from a second process, with a bounded number of requests in flight.

The server (``transferlab serve RUN``, its own process, loopback) serves an image classifier: the run given with
``--run``, else EfficientNet-Lite0 (ImageNet weights) + an untrained ants/bees head at ``--image-size``. This
process sends ``--requests`` POST /predict requests (or, with ``--seconds``, as many as ``--concurrency`` clients
send one after another in that time), each with ``--items`` hymenoptera photos (multipart), keeping at most
``--concurrency`` in flight (httpx's async client), after ``--warmup`` requests that are not counted.

Reported: requests and images per second over the timed requests, p50 / p90 / p99 latency per request, the number
of errors (any status but 200, or a failed connection), and the server's resident memory before and after the load
(its processes' RSS summed) and the peak RSS of the main one. Run it alone on the machine: the client shares the CPU
with the server.

Usage:  python bench/serve_load.py [--run RUN] [--engine torch|onnx] [--requests 200 | --seconds 60] [--concurrency 8]
            [--items 1] [--max-batch 32] [--workers 1] [--image-size 224] [--port 8765] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import torch
from _common import DATA, machine_line

from transferlab.api import export
from transferlab.backbones import create_backbone
from transferlab.models import TransferModel, build_head


def build_run(folder: Path, image_size: int, engine: str) -> Path:
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", image_size=image_size)
    run = folder / "run"
    run.mkdir()
    TransferModel(backbone, build_head("linear", backbone.num_features, 2, [], 0.0), ["ants", "bees"]).eval().save(run)
    if engine == "onnx":
        export(run)
    return run


def start_server(run: Path, args, log) -> subprocess.Popen:
    """The server process, its stderr going to ``log`` (an open file: a pipe nobody reads would block it once full)."""
    command = [sys.executable, "-m", "transferlab.cli", "serve", str(run), "--port", str(args.port), "--engine",
               args.engine, "--workers", str(args.workers), "--max-batch", str(args.max_batch), "--max-items",
               str(max(args.items, 1)), "-q"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())


def wait_until_healthy(base: str, server: subprocess.Popen, log_path: Path, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log_path.read_bytes()[-2000:].decode(errors="replace")
            raise SystemExit(f"the server exited ({server.returncode}): {tail}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer /health within {seconds:.0f} s")


async def load_test(base: str, photos: list[Path], args) -> tuple[list[float], int, float]:
    """Latencies of the timed requests, the error count, and the wall time of the timed part."""
    payloads = [(photo.name, photo.read_bytes()) for photo in photos]
    limit = asyncio.Semaphore(args.concurrency)
    latencies: list[float] = []
    errors = 0

    async def one(client: httpx.AsyncClient, index: int, timed: bool) -> None:
        nonlocal errors
        files = [("files", (name, data, "image/jpeg"))
                 for name, data in (payloads[(index * args.items + k) % len(payloads)] for k in range(args.items))]
        async with limit:
            started = time.perf_counter()
            try:
                response = await client.post(f"{base}/predict", files=files)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if timed:
                latencies.append(time.perf_counter() - started)
                errors += not ok

    async with httpx.AsyncClient(timeout=120.0, limits=httpx.Limits(max_connections=args.concurrency)) as client:
        await asyncio.gather(*(one(client, i, False) for i in range(args.warmup)))
        started = time.perf_counter()
        if args.seconds:  # a bounded loop: each of the clients sends its next request until the time is up
            deadline = started + args.seconds

            async def client_loop(first: int) -> None:
                index = first
                while time.perf_counter() < deadline:
                    await one(client, index, True)
                    index += args.concurrency

            await asyncio.gather(*(client_loop(k) for k in range(args.concurrency)))
        else:
            await asyncio.gather(*(one(client, i, True) for i in range(args.requests)))
        return latencies, errors, time.perf_counter() - started


def server_memory(pid: int) -> tuple[float, float]:
    """RSS of the server and its worker processes together, and the main process's peak RSS, in MiB."""
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in processes if p.is_running())
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return rss / 2**20, peak / 2**20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: EfficientNet-Lite0 + untrained head)")
    parser.add_argument("--engine", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=None, help="send requests for this long instead of --requests")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--items", type=int, default=1, help="images per request")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine_line())
    photos = sorted((DATA / "hymenoptera" / "val" / "ants").glob("*.jpg"))
    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as folder:
        run = args.run or build_run(Path(folder), args.image_size, args.engine)
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            server = start_server(run, args, log)
            try:
                wait_until_healthy(base, server, log_path)
                rss_before, _ = server_memory(server.pid)
                latencies, errors, wall = asyncio.run(load_test(base, photos, args))
                rss, peak = server_memory(server.pid)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
    result = {
        "engine": args.engine, "workers": args.workers, "concurrency": args.concurrency, "items": args.items,
        "max_batch": args.max_batch, "requests": len(latencies), "errors": errors,
        "requests_per_second": round(len(latencies) / wall, 2),
        "images_per_second": round(len(latencies) * args.items / wall, 2),
        "latency_ms": {"p50": round(1000 * statistics.median(latencies), 1),
                       "p90": round(1000 * percentile(latencies, 0.90), 1),
                       "p99": round(1000 * percentile(latencies, 0.99), 1)},
        "server_rss_before_mib": round(rss_before, 1), "server_rss_mib": round(rss, 1),
        "server_peak_rss_mib": round(peak, 1), "seconds": round(wall, 1),
    }
    print(f"{args.engine} engine, {args.workers} worker(s), {args.concurrency} in flight, {args.items} image(s) per "
          f"request: {result['requests_per_second']} req/s ({result['images_per_second']} images/s), latency p50 "
          f"{result['latency_ms']['p50']} ms p90 {result['latency_ms']['p90']} ms p99 {result['latency_ms']['p99']} ms,"
          f" {errors} errors over {len(latencies)} requests in {result['seconds']} s; server RSS "
          f"{result['server_rss_before_mib']} MiB before the load, {result['server_rss_mib']} MiB after (peak "
          f"{result['server_peak_rss_mib']} MiB)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), **result}, indent=2))


if __name__ == "__main__":
    main()
