"""Fault injection for the reliability tests: AWS errors through botocore's event hooks, and crashes.

* :func:`aws_errors` makes chosen calls of one operation fail *on the wire*: the hook answers at
  ``before-send`` (inside botocore's retry loop) with a real HTTP error response, so botocore parses it and
  its retry policy sees exactly what S3 throttling (``503 SlowDown``) or an outage would produce. Moto is
  short-circuited only for the injected calls; the others reach it unchanged.
* :func:`crash_on` raises :class:`SimulatedCrash` (a ``BaseException``, like the ``SystemExit`` of a
  killed process) at the n-th call of an operation, so no ``except Exception`` in the code under test can
  swallow it: the step dies half way, as a CodeBuild container that is stopped or runs out of memory.
* :func:`no_retry_sleep` keeps botocore's retries (the count is what the tests check) without their
  back-off sleeps, so fault tests stay fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.awsrequest import AWSResponse


class SimulatedCrash(BaseException):
    """The process died here (not an ``Exception``: nothing in the code under test may catch it)."""


class _RawBody:
    """The minimal raw-response object botocore reads an error body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


@dataclass
class FaultLog:
    """What an injector did: every call it saw and the ones it failed (request URLs)."""

    seen: list[str] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)


_S3_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
             '<RequestId>INJECTED</RequestId></Error>')
_JSON_ERROR = '{{"__type": "{code}", "message": "{message}"}}'


def _error_response(service: str, url: str, code: str, status: int) -> AWSResponse:
    message = f"injected {code}"
    if service == "s3":
        body, ctype = _S3_ERROR.format(code=code, message=message), "application/xml"
    else:
        body, ctype = _JSON_ERROR.format(code=code, message=message), "application/x-amz-json-1.0"
    return AWSResponse(url, status, {"Content-Type": ctype, "x-amzn-ErrorType": code},
                       _RawBody(body.encode()))  # type: ignore[arg-type]


@contextlib.contextmanager
def aws_errors(client: Any, operation: str, *, code: str = "SlowDown", status: int = 503,
               times: int | None = 1, when: Callable[[str], bool] | None = None) -> Iterator[FaultLog]:
    """Fail calls of ``operation`` (e.g. ``"GetObject"``) on ``client`` with an HTTP error response.

    Args:
        client: the boto3 client (the one :func:`alp.aws.client` returns, so the code under test uses it).
        operation: the API operation name.
        code, status: the error, e.g. ``SlowDown``/503 (S3 throttling), ``InternalError``/500,
            ``AccessDenied``/403, ``ThrottlingException``/400 (JSON services).
        times: how many matching requests fail (``None``: all of them); retries count as requests.
        when: a predicate on the request URL selecting the requests that may fail.
    """
    log = FaultLog()
    service = client.meta.service_model.endpoint_prefix
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        url = str(request.url)
        log.seen.append(url)
        if when is not None and not when(url):
            return None
        if times is not None and len(log.injected) >= times:
            return None
        log.injected.append(url)
        return _error_response(service, url, code, status)

    client.meta.events.register_first(event, hook)
    try:
        yield log
    finally:
        client.meta.events.unregister(event, hook)


@contextlib.contextmanager
def crash_on(client: Any, operation: str, *, call: int = 1,
             when: Callable[[dict[str, Any]], bool] | None = None) -> Iterator[FaultLog]:
    """Raise :class:`SimulatedCrash` at the ``call``-th matching call of ``operation`` (1-based)."""
    log = FaultLog()
    event = f"before-parameter-build.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def hook(params: dict[str, Any], **_: Any) -> None:
        if when is not None and not when(params):
            return
        log.seen.append(str(params.get("Key") or params.get("Bucket") or ""))
        if len(log.seen) == call:
            log.injected.append(log.seen[-1])
            raise SimulatedCrash(f"simulated crash at {operation} call {call}")

    client.meta.events.register(event, hook)
    try:
        yield log
    finally:
        client.meta.events.unregister(event, hook)


@contextlib.contextmanager
def no_retry_sleep() -> Iterator[None]:
    """botocore retries as configured, but without sleeping between attempts (or for the rate limiter)."""
    with mock.patch("botocore.retries.standard.ExponentialBackoff.delay_amount", return_value=0.0), \
            mock.patch("botocore.retries.bucket.TokenBucket.acquire", return_value=True):
        yield


# --------------------------------------------------------------------------------------------------
# A small pipeline on moto to inject faults into: the demo's stack resources, real uploads, the batcher
# and the declared labeling steps (alp.steps) with the local workforce answering from synthetic truth.
# --------------------------------------------------------------------------------------------------
ACCOUNT = "123456789012"  # moto's default account


def jpeg_bytes(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A small real JPEG (noise on a gradient), different for every seed."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(40, 200, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


class MiniPipeline:
    """Stack resources on (already active) moto plus helpers to upload, batch and run the labeling steps.

    Point ``$ALP_SETTINGS_URI`` at :attr:`settings_file` before running steps.

    Every image uploaded through :meth:`upload` gets a truth line (looked up by file name by the local
    workforce), so the label step can answer it.
    """

    def __init__(self, settings_dir: Any, **overrides: Any) -> None:
        from pathlib import Path

        from alp.machine.embedded import create_stack_resources
        from alp.resources import ResourceNames
        from alp.settings import Settings

        probe = ResourceNames.from_settings(Settings(), account=ACCOUNT, region="us-east-1")
        self.truth_uri = f"s3://{probe.data_bucket}/truth/truth.jsonl"
        self.settings = Settings().with_overrides({
            "labeling.backend": "local", "labeling.local_truth_uri": self.truth_uri,
            "labeling.local_workers": 1, "labeling.gold_items_per_job": 0, **overrides})
        self.names = ResourceNames.from_settings(self.settings, account=ACCOUNT, region="us-east-1")
        # The steps read their settings from $ALP_SETTINGS_URI: callers point it here (monkeypatch.setenv).
        self.settings_file = Path(settings_dir) / "settings.json"
        self.settings_file.write_text(self.settings.to_json())
        self.queue_url = create_stack_resources(self.settings, self.names)
        self.truth: dict[str, Any] = {}

    @property
    def s3(self) -> Any:
        from alp import aws

        return aws.client("s3")

    def upload(self, name: str, body: bytes | None = None, *, seed: int = 0, persons: int = 1,
               size: tuple[int, int] = (640, 480)) -> str:
        """Upload ``incoming/<name>`` (a ``size`` JPEG unless ``body`` is given); returns its key."""
        from labeling_builders import truth_line

        from alp.manifest import write_manifest

        key = self.settings.storage.unlabeled_prefix + name
        self.s3.put_object(Bucket=self.names.unlabeled_bucket, Key=key,
                           Body=body if body is not None else jpeg_bytes(seed, size))
        self.truth[name] = truth_line(f"s3://{self.names.data_bucket}/truth/{name}", self.settings,
                                      persons=persons, seed=seed, width=size[0], height=size[1])
        write_manifest(self.truth_uri, list(self.truth.values()))
        return key

    def register_approved(self, local_bundle: Any) -> str:
        """Copy a bundle folder to the data bucket and register it Approved (the Infer step then runs it)."""
        from pathlib import Path

        from alp import storage
        from alp.registry import register_bundle

        uri = f"s3://{self.names.data_bucket}/{self.settings.storage.models_prefix}{Path(local_bundle).name}/"
        for f in sorted(Path(local_bundle).iterdir()):
            storage.write_bytes(uri + f.name, f.read_bytes())
        register_bundle(self.settings, uri, approved=True)
        return uri

    def receive_all(self) -> list[dict[str, Any]]:
        """Every message waiting in the upload queue (Lambda-record shaped), deleted from the queue."""
        from alp.machine.embedded import delete_records, receive_upload_records

        out: list[dict[str, Any]] = []
        while True:
            got = receive_upload_records(self.queue_url)
            if not got:
                return out
            delete_records(self.queue_url, got, set())
            out.extend(got)

    def redelivered(self, record: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """``n`` more deliveries of the same event (EventBridge/SQS at-least-once): new message ids."""
        return [{**record, "messageId": f"{record['messageId']}-dup{i}", "receiptHandle": f"dup{i}"}
                for i in range(n)]

    def batch(self, records: list[dict[str, Any]]) -> Any:
        from alp.batching.window import process_sqs_records

        return process_sqs_records(records, self.settings, self.names)

    def run_step(self, step: str, manifest_uri: str) -> int:
        from alp.steps import run_step

        return run_step("labeling", step, {"batch_manifest": manifest_uri})

    def run_labeling(self, manifest_uri: str) -> None:
        for step in ("Infer", "Label", "Merge", "Requeue"):
            rc = self.run_step(step, manifest_uri)
            if rc != 0:
                raise RuntimeError(f"step {step} of {manifest_uri} exited {rc}")

    def keys_under(self, prefix: str) -> list[str]:
        from alp import storage

        return sorted(storage.list_uris(f"s3://{self.names.data_bucket}/{prefix}"))
