"""The registry's Approved bundle on moto: none approved -> /health says so and /predict 503; a newly approved
bundle is swapped in while requests run, none failing; a bundle whose bundle.json differs from the registry's
record is refused and the current one kept."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from bundle_factory import scripted_bundle
from ml_backend_requests import predict_body, simple_task
from serve_fixtures import serve_settings

from alp import registry
from alp.serve.app import create_app, running

pytestmark = pytest.mark.usefixtures("aws_mock")


def _wait_for(client: httpx.Client, bundle_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        if health["model_version"] == bundle_id:
            return health
        time.sleep(0.1)
    raise AssertionError(f"{bundle_id} was not served within {timeout} s: {health}")


def test_given_no_approved_bundle_then_health_says_so_and_predict_answers_503(images, heads_config, tmp_path):
    app = create_app(serve_settings(images), cache_dir=tmp_path / "cache")
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/health").json()
        assert health["status"] == "UP" and health["model_version"] is None
        assert "no approved bundle" in health["bundle"]["reason"]
        assert client.post("/setup", json={"project": "1.1", "schema": heads_config}).json() == {"model_version": None}
        r = client.post("/predict", json=predict_body([simple_task(1, {"image": "bright.png"})], heads_config))
        assert r.status_code == 503 and r.json()["reason"] == "no_bundle" and "no approved bundle" in r.json()["detail"]


def test_given_a_newly_approved_bundle_then_it_is_swapped_in_while_requests_run_and_none_fails(
        images, heads_config, tmp_path):
    settings = serve_settings(images, reload_seconds=1.0)
    first = scripted_bundle(tmp_path / "a", bundle_id="serve-a")
    registry.register_bundle(settings, str(first), approved=True, create_group_if_missing=True)
    app = create_app(settings, cache_dir=tmp_path / "cache")
    body = predict_body([simple_task(1, {"image": "bright.png"})], heads_config)
    seen: dict[int, list[tuple[int, str | None]]] = {0: [], 1: []}
    stop = threading.Event()

    def keep_asking(url: str, who: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json=body)
                seen[who].append((r.status_code, r.json().get("model_version")))

    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").json()["model_version"] == "serve-a"
        askers = [threading.Thread(target=keep_asking, args=(url, i)) for i in seen]
        for t in askers:
            t.start()
        try:
            time.sleep(0.5)
            second = scripted_bundle(tmp_path / "b", bundle_id="serve-b", shift=(4.0, 0.0))
            registry.register_bundle(settings, str(second), approved=True)
            health = _wait_for(client, "serve-b")
            time.sleep(0.5)
        finally:
            stop.set()
            for t in askers:
                t.join(timeout=30)
        assert health["bundle"]["source"] == "registry" and health["bundle"]["swaps"] == 1
        for answers in seen.values():
            assert answers and all(code == 200 for code, _ in answers), answers
            versions = [v for _, v in answers]
            switched = versions.index("serve-b")  # each client sees a then b, never back
            assert set(versions[:switched]) == {"serve-a"} and set(versions[switched:]) == {"serve-b"}

        # a bundle whose bundle.json no longer matches the registry's record is refused; b keeps serving
        third = scripted_bundle(tmp_path / "c", bundle_id="serve-c")
        registry.register_bundle(settings, str(third), approved=True)
        descriptor = Path(third) / "bundle.json"
        tampered = json.loads(descriptor.read_text())
        tampered["metrics"] = {"note": "rewritten after approval"}
        descriptor.write_text(json.dumps(tampered))
        deadline = time.monotonic() + 15
        while "last_refresh_error" not in (status := client.get("/health").json())["bundle"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["model_version"] == "serve-b" and "registry records" in status["bundle"]["last_refresh_error"]
        assert client.post("/predict", json=body).json()["model_version"] == "serve-b"
