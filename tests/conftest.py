"""Shared fixtures. Tests never reach the internet: a socket guard allows only loopback connections."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

# Credentials and region for moto; never real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("MPLBACKEND", "Agg")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


pytest_plugins = ["studio_fixtures", "serve_fixtures"]  # a real Label Studio server; the suggestion service


class NetworkBlocked(RuntimeError):
    pass


def _host_of(address: object) -> str | None:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None  # unix sockets


def _guarded_connect(self: socket.socket, address: object) -> None:
    host = _host_of(address)
    if host is not None and host not in _LOOPBACK:
        raise NetworkBlocked(f"test tried to connect to {address!r}; only 127.0.0.1 is allowed")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    host = _host_of(address)
    if host is not None and host not in _LOOPBACK:
        raise NetworkBlocked(f"test tried to connect to {address!r}; only 127.0.0.1 is allowed")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def aws_mock() -> Iterator[None]:
    """In-process moto for every service; boto3 clients made through alp.aws are reset around it."""
    from moto import mock_aws

    from alp import aws

    aws.reset_clients()
    saved = os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        yield
    aws.reset_clients()
    if saved is not None:
        os.environ["AWS_ENDPOINT_URL"] = saved


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port), for tests that need a real HTTP endpoint."""
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def mini_pipe(aws_mock: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stack's resources on in-process moto with the local workforce (``tests/faults.py: MiniPipeline``);
    the steps read its settings file."""
    from faults import MiniPipeline

    from alp.settings import SETTINGS_ENV

    p = MiniPipeline(tmp_path)
    monkeypatch.setenv(SETTINGS_ENV, str(p.settings_file))
    monkeypatch.setenv("ALP_METRICS_LOG", str(tmp_path / "metrics.jsonl"))
    return p
