"""A real Label Studio server for the tests (a pytest plugin: ``pytest_plugins`` in conftest.py).

One server per test session, started by the project's own code (:func:`alp.studio.server.start_server`, the
pinned version in its own environment, installed on first use), bound to 127.0.0.1 on a free port, its state
in a temporary folder; stopped at the end. Images live in a moto server on 127.0.0.1, so Label Studio's S3
storage presigns URLs a browser can load.
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alp import aws
from alp.labeling.label_studio import studio_up
from alp.machine.embedded import aws_environment
from alp.settings import Settings
from alp.studio.server import StudioConnection, stop_server


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@dataclass
class StudioServer:
    run_dir: Path
    connection: StudioConnection


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioServer]:
    run_dir = tmp_path_factory.mktemp("studio")
    connection = studio_up(run_dir, Settings(), port=_free_port(), timeout_seconds=600, say=lambda m: None)
    try:
        yield StudioServer(run_dir=run_dir, connection=connection)
    finally:
        stop_server(run_dir)


@pytest.fixture
def studio_aws(moto_server: str) -> Iterator[str]:
    """Every boto3 client of the test on the moto server; the buckets of tests/studio_builders.py exist."""
    from studio_builders import DATA, UNLABELED

    with aws_environment(moto_server, "us-east-1"):
        s3 = aws.client("s3")
        for bucket in (DATA, UNLABELED):
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
        yield moto_server


def jpeg_bytes(width: int = 640, height: int = 480, shade: int = 90) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), (shade, shade + 20, shade + 40))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()
