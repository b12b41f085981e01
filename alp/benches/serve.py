"""``alp bench serve``: the suggestion service under load, against the engine called in-process in the same run.

The service (``alp serve``) runs in its own process on a bundle (default: the zero-shot bundle, built once from
the verified COCO-pose checkpoint: a real three-role engine at 640 px). 1, 4 and 16 concurrent clients send real
HTTP requests (``POST /v1/predict`` with a 640x480 JPEG of a synthetic in-cabin frame) and the bench reports
p50/p95/p99 latency, requests per second and errors per level; the overhead ratio is the service's p50 with one
client over the p50 of decoding and predicting the same images in this process (the same engine, the same
thread count; measured before and after the service's run, pooled); the service's resident memory is read after a
warm-up at every level and again after all the requests (a leak grows it; first allocations do not count).

Targets on 2 cores: p95 <= 150 ms with one client; 0 errors, and p50 at 16 clients no worse than 16x the p50 at
one (latency growing no worse than linearly); overhead ratio <= 1.15; resident memory growth <= 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess  # nosec B404: the service is this interpreter running alp, with arguments built here
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from alp.benches.arguments import add_bench, options_from

TARGET_P95_MS = 150.0
TARGET_OVERHEAD = 1.15
TARGET_RSS_GROWTH = 0.10


class ServeBenchOptions(BaseModel):
    bundle: str | None = Field(None, description="bundle folder to serve (default: the zero-shot bundle, built once)")
    clients: list[int] = Field(default_factory=lambda: [1, 4, 16], description="concurrent clients per level")
    requests: int = Field(1000, ge=10, description="requests over all levels (split evenly)")
    images: int = Field(8, ge=1, description="distinct 640x480 frames the requests cycle through")
    imgsz: int = Field(640, ge=32, multiple_of=32, description="the zero-shot bundle's input size")
    work_dir: str | None = Field(None, description="where the bundle is cached (default: ~/.cache/alp/bench-serve)")


class LevelResult(BaseModel):
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    errors: int
    requests: int


class ServeBenchResult(BaseModel):
    bench: Literal["serve"] = "serve"
    bundle_id: str
    clients: dict[str, LevelResult]
    in_process_p50_ms: float
    overhead_ratio: float
    rss_mb_before: float
    rss_mb_after: float
    rss_growth: float
    targets: dict[str, float] = Field(default_factory=lambda: {
        "p95_ms_one_client": TARGET_P95_MS, "overhead_ratio": TARGET_OVERHEAD, "rss_growth": TARGET_RSS_GROWTH})
    targets_met: dict[str, bool]
    cpu_count: int | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _frames(n: int) -> list[bytes]:
    from alp.synth import encode_jpeg, render_scene

    return [encode_jpeg(render_scene(0, i, size=(640, 480)).image) for i in range(n)]


def _bundle(options: ServeBenchOptions) -> Path:
    if options.bundle:
        return Path(options.bundle)
    from alp.schema import INCABIN17
    from training.zero_shot import build_zero_shot_bundle

    work = Path(options.work_dir) if options.work_dir else Path.home() / ".cache" / "alp" / "bench-serve"
    return build_zero_shot_bundle(work, INCABIN17, imgsz=options.imgsz, config_dir=work / "ultralytics")


@contextlib.contextmanager
def _service(bundle: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``alp serve`` in its own process until the block ends; waits for /health."""
    import httpx

    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "alp", "serve", "--bundle", str(bundle), "--port", str(port), "--max-pending", "64"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"alp serve exited with {process.returncode}: "
                                       f"{log.read()[-2000:].decode(errors='replace')}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.3)
            else:
                raise TimeoutError("alp serve did not answer /health within 120 s")
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _level(url: str, frames: list[bytes], clients: int, requests: int) -> LevelResult:
    """``requests`` requests from ``clients`` threads, each on its own kept-alive connection (the standard
    library's client: the least a client can add to what is measured)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
        try:
            for i in counter:
                body = frames[i % len(frames)]
                t0 = time.perf_counter()
                try:
                    connection.request("POST", where.path, body=body, headers={"Content-Type": "image/jpeg"})
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()  # reconnects on the next request
                ms = (time.perf_counter() - t0) * 1000.0
                with lock:
                    latencies.append(ms)
                    errors += not ok
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return LevelResult(p50_ms=round(statistics.median(ordered), 1), p95_ms=pct(0.95), p99_ms=pct(0.99),
                       rps=round(len(ordered) / seconds, 1), errors=errors, requests=len(ordered))


def _in_process_ms(bundle: Path, frames: list[bytes], rounds: int = 3) -> list[float]:
    """Decode and predict each frame in this process with the engine the service runs (the baseline)."""
    from alp.settings import Settings
    from inference.engine import InferenceEngine
    from inference.image_io import decode_image

    settings = Settings()
    limits = settings.inference
    engine = InferenceEngine.from_bundle(str(bundle), settings, Path(tempfile.gettempdir()) / "alp-bench-serve")
    times = []
    with engine:
        engine.predict_decoded([decode_image(frames[0], max_pixels=limits.max_image_pixels,
                                             min_side=limits.min_image_side)])  # warm-up
        for _ in range(rounds):
            for data in frames:
                t0 = time.perf_counter()
                engine.predict_decoded([decode_image(data, max_pixels=limits.max_image_pixels,
                                                     min_side=limits.min_image_side)])
                times.append((time.perf_counter() - t0) * 1000.0)
    return times


def run_serve_bench(options: ServeBenchOptions) -> ServeBenchResult:
    from alp.bundle import DESCRIPTOR_NAME, parse_descriptor

    bundle = _bundle(options)
    bundle_id = parse_descriptor((bundle / DESCRIPTOR_NAME).read_text()).bundle_id
    frames = _frames(options.images)
    # the baseline before and after the service's run, pooled: a machine shared with others drifts
    in_process = _in_process_ms(bundle, frames)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/predict"
    per_level = max(10, options.requests // len(options.clients))
    with _service(bundle, port) as process:
        for clients in options.clients:  # warm-up at every level: worker threads, sessions, first allocations
            _level(url, frames, clients, 2 * clients + len(frames))
        before = _rss_mb(process.pid)
        levels = {str(c): _level(url, frames, c, per_level) for c in options.clients}
        after = _rss_mb(process.pid)
    in_process += _in_process_ms(bundle, frames)
    baseline = statistics.median(in_process)
    one = levels[str(min(options.clients))]
    most = levels[str(max(options.clients))]
    overhead = one.p50_ms / baseline if baseline > 0 else float("inf")
    growth = (after - before) / before if before > 0 else 0.0
    met = {
        "p95_ms_one_client": one.p95_ms <= TARGET_P95_MS,
        "no_errors": all(level.errors == 0 for level in levels.values()),
        "latency_no_worse_than_linear": most.p50_ms <= one.p50_ms * max(options.clients) / min(options.clients),
        "overhead_ratio": overhead <= TARGET_OVERHEAD,
        "rss_growth": growth <= TARGET_RSS_GROWTH,
    }
    return ServeBenchResult(bundle_id=bundle_id, clients=levels, in_process_p50_ms=round(baseline, 1),
                            overhead_ratio=round(overhead, 3), rss_mb_before=round(before, 1),
                            rss_mb_after=round(after, 1), rss_growth=round(growth, 4), targets_met=met,
                            cpu_count=os.cpu_count())


def _main(args: argparse.Namespace) -> int:
    result = run_serve_bench(options_from(args, ServeBenchOptions)).model_dump(mode="json")
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_bench(subparsers, "serve", help="the suggestion service under 1, 4 and 16 clients vs the engine in-process",
              options=ServeBenchOptions, main=_main, json_help="one line of JSON")
