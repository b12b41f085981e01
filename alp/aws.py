"""The single place boto3 clients are made.

boto3 honours ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``), which is how the embedded mode and
the tests point every client at a moto server on 127.0.0.1. Clients are cached per (service, endpoint,
region) so a test that switches endpoints gets fresh clients.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}
# Called with (service, client) for every new client: the deploy rehearsal records and checks every call
# there (alp.rehearsal.principals). Empty in the cloud and the demo.
_observers: list[Callable[[str, Any], None]] = []
_RETRIES = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10, read_timeout=120)


def client(service: str) -> Any:
    """A boto3 client with adaptive retries (S3 throttling and 5xx are retried by botocore)."""
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    key = (service, endpoint, region)
    with _lock:
        if key not in _clients:
            # boto3-stubs types client() per literal service name; ours is a runtime string.
            made = boto3.session.Session().client(service, region_name=region, config=_RETRIES)  # type: ignore[call-overload]
            for observe in _observers:
                observe(service, made)
            _clients[key] = made
        return _clients[key]


def add_client_observer(observer: Callable[[str, Any], None]) -> None:
    """Call ``observer(service, client)`` for every client made from now on (cached clients are dropped)."""
    with _lock:
        _observers.append(observer)
        _clients.clear()


def remove_client_observer(observer: Callable[[str, Any], None]) -> None:
    with _lock:
        if observer in _observers:
            _observers.remove(observer)
        _clients.clear()


def account_id() -> str:
    """The account the current credentials belong to (STS answers any valid credentials)."""
    account: str = client("sts").get_caller_identity()["Account"]
    return account


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError (a HEAD's is its HTTP status); "" for anything else."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError's answer; 0 for anything else."""
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def reset_clients() -> None:
    """Forget cached clients (tests that start a new moto server call this)."""
    with _lock:
        _clients.clear()
