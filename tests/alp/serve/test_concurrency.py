"""Inference runs in a bounded pool off the event loop: /health answers during a long prediction, a full pool
answers 503 instead of queueing without end, and a client that sends its body slowly stalls nobody else."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from ml_backend_requests import predict_body, simple_task
from serve_fixtures import Running, serve_settings

from alp.serve.app import create_app, running
from inference.engine import InferenceEngine

SLOW_SECONDS = 1.5


class SlowEngine(InferenceEngine):
    """The real engine, taking ``SLOW_SECONDS`` longer per call (a large model on a small machine)."""

    def predict_decoded(self, images: Any, source_refs: Any = None) -> Any:
        time.sleep(SLOW_SECONDS)
        return super().predict_decoded(images, source_refs)


@pytest.fixture(scope="module")
def slow(images, bundle_dir, tmp_path_factory) -> Iterator[Running]:
    app = create_app(serve_settings(images), bundle_uri=str(bundle_dir), cache_dir=tmp_path_factory.mktemp("c"),
                     engine_factory=SlowEngine, workers=1, max_pending=2, body_timeout_seconds=1.0)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Running(url=url, app=app, client=client)


def _predict(url: str, config: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.post("/predict", json=predict_body([simple_task(1, {"image": "bright.png"})], config))


def test_given_a_long_prediction_then_health_still_answers_at_once(slow, heads_config):
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_predict, slow.url, heads_config)
        time.sleep(0.3)  # the prediction is in the worker now
        t0 = time.perf_counter()
        assert slow.client.get("/health").status_code == 200
        assert time.perf_counter() - t0 < 0.5
        assert not pending.done()
        assert pending.result().status_code == 200


def test_given_more_work_than_the_pool_holds_then_503_busy_and_then_served_again(slow, heads_config):
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: _predict(slow.url, heads_config), range(5)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) >= 2 and set(codes) <= {200, 503}, codes
    busy = [r for r in answers if r.status_code == 503]
    assert busy and all(r.json()["reason"] == "busy" for r in busy)
    assert _predict(slow.url, heads_config).status_code == 200


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or stays quiet for a second)."""
    sock.settimeout(1.0)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, OSError):
        pass
    return data


def _slow_client(url: str, stop: threading.Event, reply: list[bytes]) -> None:
    """Announces a 100 kB body and sends one byte every 0.1 s until the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{")
        while not stop.is_set():
            sock.settimeout(0.1)
            try:
                first = sock.recv(65536)
            except TimeoutError:
                first = None
            if first is not None:
                reply.append(first + _read_answer(sock))
                return
            try:
                sock.sendall(b" ")
            except OSError:
                return


def test_given_a_client_sending_its_body_slowly_then_others_are_served_and_it_gets_408(served, heads_config):
    stop = threading.Event()
    reply: list[bytes] = []
    clients = [threading.Thread(target=_slow_client, args=(served.url, stop, reply)) for _ in range(3)]
    for t in clients:
        t.start()
    try:
        time.sleep(0.3)
        t0 = time.perf_counter()
        for _ in range(3):
            assert served.client.get("/health").status_code == 200
            ok = served.client.post("/predict", json=predict_body([simple_task(1, {"image": "bright.png"})],
                                                                  heads_config))
            assert ok.status_code == 200
        assert time.perf_counter() - t0 < 1.5
        for t in clients:
            t.join(timeout=10)
    finally:
        stop.set()
    # the service's body timeout (2 s in this module's service) ended each slow request with 408
    assert len(reply) == 3 and all(r.startswith(b"HTTP/1.1 408") and b"body_timeout" in r for r in reply)
