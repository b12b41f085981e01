"""The suggestion service under test: a scripted bundle, a folder of good and bad images, a stand-in for Label
Studio's own file host, and the real service started with uvicorn on 127.0.0.1 (a free port) in a thread."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from bundle_factory import bright_image, scripted_bundle
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from alp.schema import get_schema
from alp.serve.app import create_app, running
from alp.settings import Settings
from alp.studio import configs

STUDIO_TOKEN = "5e2f0c9a7d1b4e6f8a3c5d7e9f1a2b3c4d5e6f70"  # a stand-in for Label Studio's 40-hex token
MAX_IMAGE_BYTES = 2_000_000


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def huge_png_header(width: int = 10_000, height: int = 10_000) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (100 megapixels): the decoder must refuse it from the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@dataclass
class Images:
    root: Path
    bright: bytes
    dark: bytes

    def path(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    root = tmp_path_factory.mktemp("serve-images")
    bright = png_bytes(bright_image(240))
    dark = png_bytes(bright_image(20))
    good_jpeg = jpeg_bytes(bright_image(240))
    files = {
        "bright.png": bright, "dark.png": dark, "dim.png": png_bytes(bright_image(90)), "bright.jpg": good_jpeg,
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "not-an-image.png": b"this is a text file, not a picture\n" * 20,
        "huge.png": huge_png_header(),
        "wide.png": png_bytes(np.full((256, 640, 3), 240, dtype=np.uint8)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root.parent / "secret.png").write_bytes(bright)  # outside the image root: never served
    return Images(root=root, bright=bright, dark=dark)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("serve-bundle"), bundle_id="serve-scripted-v1")


@pytest.fixture(scope="session")
def heads_config() -> str:
    return configs.label_config("head-boxes", get_schema("incabin17"))


@pytest.fixture(scope="session")
def keypoints_config() -> str:
    return configs.label_config("keypoints", get_schema("incabin17"))


def serve_settings(images: Images, **serve: Any) -> Settings:
    values: dict[str, Any] = {"allowed_hosts": ["127.0.0.1"], "image_root": str(images.root),
                              "max_image_bytes": MAX_IMAGE_BYTES, **serve}
    return Settings.model_validate({"serve": values})


@dataclass
class FileHost:
    """A stand-in for Label Studio's file serving (``/data/upload/...``, token required) and a public host."""

    url: str  # http://127.0.0.1:<port>: an allowed host
    studio_url: str  # http://localhost:<port>: the same server as Label Studio's own origin
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization header)


@pytest.fixture(scope="session")
def file_host(images: Images) -> Iterator[FileHost]:
    host = FileHost(url="", studio_url="")

    async def upload(request: Request) -> Response:
        auth = request.headers.get("authorization")
        host.seen.append((request.url.path, auth))
        if "image/" in request.headers.get("accept", ""):
            # Label Studio 1.23.2's upload view (content negotiation) answers Accept: image/* with 406 (seen live)
            return Response("not acceptable", status_code=406)
        if auth != f"Token {STUDIO_TOKEN}":
            return Response("unauthorized", status_code=401)
        name = request.path_params["name"]
        if name == "to-public.png":  # Label Studio sending the client elsewhere: the token must not follow
            return RedirectResponse(f"{host.url}/public/bright.png", status_code=302)
        path = images.path(name)
        return Response(path.read_bytes(), media_type="image/png") if path.is_file() else Response(status_code=404)

    async def public(request: Request) -> Response:
        host.seen.append((request.url.path, request.headers.get("authorization")))
        path = images.path(request.path_params["name"])
        return Response(path.read_bytes(), media_type="image/png") if path.is_file() else Response(status_code=404)

    async def redirect_out(request: Request) -> Response:
        return RedirectResponse("http://203.0.113.7/elsewhere.png", status_code=302)

    async def endless(request: Request) -> Response:
        async def chunks() -> Any:
            for _ in range(40):  # 4 MB, no Content-Length: the limit must hold while streaming
                yield b"\xff" * 100_000

        return StreamingResponse(chunks(), media_type="image/png")

    app = Starlette(routes=[Route("/data/upload/7/{name}", upload), Route("/public/{name}", public),
                            Route("/redirect-out", redirect_out), Route("/endless", endless)])
    with running(app) as url:
        host.url = url
        host.studio_url = url.replace("127.0.0.1", "localhost")
        yield host


@dataclass
class Running:
    url: str
    app: Starlette
    client: httpx.Client

    @property
    def service(self) -> Any:
        return self.app.state.service


@pytest.fixture(scope="module")
def served(images: Images, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The service on the scripted bundle folder, shared by a module's tests."""
    app = create_app(serve_settings(images), bundle_uri=str(bundle_dir),
                     cache_dir=tmp_path_factory.mktemp("serve-cache"), body_timeout_seconds=2.0)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Running(url=url, app=app, client=client)
