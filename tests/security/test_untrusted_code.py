"""No untrusted code runs: hash-verified bundles, ONNX-only inference, hash-checked ``.pt`` files, no network.

A crafted malicious pickle (it creates a marker file when unpickled) is used to show that the checks stop
it before anything unpickles it, and, in a separate process, that the payload is live (so these tests
would fail if a check were skipped).
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle  # nosec B403 - used only to build the malicious test payload, never to load untrusted data
import socket
import subprocess  # nosec B404
import sys
from pathlib import Path

import pytest
from bundle_factory import bright_image, scripted_bundle
from conftest import NetworkBlocked
from paths import REPO_ROOT  # noqa: E402

from alp import storage
from alp.bundle import BundleHashMismatch, load_bundle, sha256_file
from alp.settings import Settings

ROOT = REPO_ROOT


class _CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _malicious_pt(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": _CreatesMarker(marker), "epoch": 1}, protocol=2))
    return path


# --- bundles -------------------------------------------------------------------------------------------
def test_given_a_model_file_swapped_after_registration_then_the_bundle_does_not_load(tmp_path: Path) -> None:
    bundle = scripted_bundle(tmp_path / "bundle")
    load_bundle(str(bundle), tmp_path / "cache")  # intact: loads
    onnx = bundle / "head.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleHashMismatch, match="head.onnx"):
        load_bundle(str(bundle), tmp_path / "cache")
    from inference.engine import InferenceEngine

    with pytest.raises(BundleHashMismatch):
        InferenceEngine.from_bundle(str(bundle), Settings(), tmp_path / "cache")


def test_given_a_bundle_on_s3_with_a_poisoned_cache_then_the_verified_copy_is_used(aws_mock: None,
                                                                                   tmp_path: Path) -> None:
    """A cached file that no longer matches its hash is fetched again rather than trusted."""
    from alp import aws

    aws.client("s3").create_bucket(Bucket="alp-bundles")
    bundle = scripted_bundle(tmp_path / "bundle", bundle_id="cache-check")
    uri = "s3://alp-bundles/models/cache-check/"
    for f in bundle.iterdir():
        storage.write_bytes(uri + f.name, f.read_bytes())
    cache = tmp_path / "cache"
    loaded = load_bundle(uri, cache)
    loaded.paths["pose_main"].write_bytes(b"not the model")
    again = load_bundle(uri, cache)
    assert sha256_file(again.paths["pose_main"]) == loaded.descriptor.models["pose_main"].sha256


def test_given_a_rewritten_descriptor_then_the_registry_check_refuses_it(aws_mock: None, tmp_path: Path) -> None:
    """bundle.json itself is pinned by the registry: replacing model and descriptor together is caught."""
    from alp import aws
    from alp.registry import register_bundle, verify_registered

    aws.client("s3").create_bucket(Bucket="alp-bundles")
    bundle = scripted_bundle(tmp_path / "bundle", bundle_id="pinned")
    uri = "s3://alp-bundles/models/pinned/"
    for f in bundle.iterdir():
        storage.write_bytes(uri + f.name, f.read_bytes())
    registered = register_bundle(Settings(), uri, approved=True, create_group_if_missing=True)
    verify_registered(registered, tmp_path / "c1")
    # An attacker with write access swaps a model and fixes up the descriptor's hash to match.
    evil = b"\x08\x07" + bundle.joinpath("head.onnx").read_bytes()[2:]
    storage.write_bytes(uri + "head.onnx", evil)
    desc = json.loads(storage.read_text(uri + "bundle.json"))
    desc["models"]["head"]["sha256"] = hashlib.sha256(evil).hexdigest()
    storage.write_text(uri + "bundle.json", json.dumps(desc))
    with pytest.raises(BundleHashMismatch, match="registry"):
        verify_registered(registered, tmp_path / "c2")


# --- inference never unpickles -------------------------------------------------------------------------
_FORBIDDEN_IMPORTS = {"pickle", "cPickle", "dill", "joblib", "torch", "ultralytics", "shelve", "marshal"}


def test_the_inference_package_imports_no_pickle_loader_and_no_torch() -> None:
    """Static: no module of ``inference/`` imports pickle, torch, ultralytics or friends, and none calls
    ``np.load`` with ``allow_pickle``."""
    found = []
    for path in sorted((ROOT / "inference").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: import {n}" for n in names if n.split(".")[0] in _FORBIDDEN_IMPORTS]
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                found.append(f"{path.name}: allow_pickle=")
    assert found == []


def test_inference_on_a_bundle_runs_without_torch_and_without_unpickling(tmp_path: Path) -> None:
    """Dynamic, in a fresh process: load a bundle, predict, and check that no pickle was loaded and that
    torch and ultralytics were never imported."""
    bundle = scripted_bundle(tmp_path / "bundle")
    image = tmp_path / "frame.png"
    from PIL import Image

    Image.fromarray(bright_image(240)).save(image)
    script = f"""
import pickle, sys
def refuse(*a, **k):
    raise AssertionError("inference unpickled something")
pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.image_io import decode_image
engine = InferenceEngine.from_bundle({str(bundle)!r}, Settings(), {str(tmp_path / 'cache')!r}).open()
image = decode_image(open({str(image)!r}, "rb").read(), max_pixels=10**8, min_side=8)
preds = list(engine.predict_decoded([image]))
assert len(preds) == 1
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ultralytics", "dill", "joblib"))
print("ok", bad)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=False)  # nosec B603 - our own interpreter and script
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok []"


# --- .pt checkpoints -----------------------------------------------------------------------------------
def test_a_crafted_malicious_pickle_is_live_when_loaded_naively(tmp_path: Path) -> None:
    """Control: the payload works (in a separate process), so the tests below would see it run."""
    marker = tmp_path / "pwned"
    pt = _malicious_pt(tmp_path / "evil.pt", marker)
    out = subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(pt)!r}, 'rb'))"],
                         capture_output=True, text=True, timeout=60, check=False)  # nosec B603
    assert out.returncode == 0, out.stderr
    assert marker.exists()


def test_a_malicious_pt_in_place_of_the_champion_checkpoint_is_refused_before_loading(tmp_path: Path) -> None:
    from training.checkpoints import CheckpointHashMismatch, choose_start, verify_checkpoint

    good = tmp_path / "champion.pt"
    good.write_bytes(pickle.dumps({"model": None, "epoch": 3}))
    recorded = sha256_file(good)
    marker = tmp_path / "pwned"
    _malicious_pt(good, marker)  # swapped in place after its hash was recorded
    with pytest.raises(CheckpointHashMismatch, match="refusing to load"):
        verify_checkpoint(good, recorded)
    with pytest.raises(CheckpointHashMismatch):
        choose_start("pose_main", architecture="yolo11", size="n", keypoint_schema="incabin17",
                     champion_checkpoint=good, champion_sha256=recorded, champion_schema="incabin17")
    with pytest.raises(CheckpointHashMismatch, match="no valid recorded sha256"):
        verify_checkpoint(good, "")
    assert not marker.exists()


def test_torch_weights_only_loading_refuses_the_payload(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    pt = _malicious_pt(tmp_path / "evil.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(pt, weights_only=True)
    assert not marker.exists()


# --- network -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", [("10.255.255.1", 443), ("169.254.169.254", 80), ("8.8.8.8", 53),
                                     ("2001:4860:4860::8888", 443)])
def test_the_socket_guard_blocks_non_loopback_connections(address: tuple[str, int]) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlocked):
            sock.connect(address)
        with pytest.raises(NetworkBlocked):
            sock.connect_ex(address)


def test_the_socket_guard_lets_loopback_through() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
