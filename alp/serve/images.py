"""Where a task's image may come from, fetched within a size limit and decoded by the pipeline's own rules.

An image reference is one of:

* ``http(s)://`` URL: only to a host in ``serve.allowed_hosts`` (``host``, ``host:port`` or ``scheme://host[:port]``;
  without a port any port of that host) or to Label Studio's own origin, the ``hostname`` it sent in ``/setup``.
  Only Label Studio's origin gets its token (``Authorization: Token ...``). Redirects are followed by hand, at most
  :data:`MAX_REDIRECTS`, each hop checked again, and the token is never sent to another origin;
* a relative URL (``/data/upload/...``): resolved against Label Studio's origin;
* ``s3://bucket/key``: through boto3, when ``s3://bucket`` is in ``serve.allowed_hosts`` (a virtual-hosted S3
  host name, ``bucket.s3[.region].amazonaws.com``, allows its bucket too);
* a local path (or ``file://``): only inside ``serve.image_root``, after resolving links and ``..``.

Anything else is refused with 403 (outside what is allowed) or 400 (not a reference we read). Bytes beyond
``serve.max_image_bytes`` end the download with 413, whether the size was announced or not. Decoding is
:func:`inference.image_io.decode_image` with the inference settings' limits: not an image 415, a truncated, corrupt,
too small or too large (pixels) image 422, each with the decoder's reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import anyio.to_thread
import httpx

from alp import aws
from alp.serve.errors import ServeError
from alp.settings import InferenceSettings
from inference.image_io import DecodedImage, ImageRejected, decode_image

MAX_REDIRECTS = 3
_CHUNK = 1 << 16
_DEFAULT_PORTS = {"http": 80, "https": 443}
_S3_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$")
_UNSUPPORTED_MEDIA = {"not_an_image", "unsupported_format"}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin | None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            return None
        return cls(scheme, parts.hostname.lower(), port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class StudioOrigin:
    """Label Studio as it introduced itself in ``/setup``: its URL and the token its own URLs need."""

    url: str
    token: str | None = field(default=None, repr=False)

    @property
    def origin(self) -> Origin | None:
        return Origin.of(self.url)


@dataclass(frozen=True)
class _HostRule:
    scheme: str | None
    host: str
    port: int | None

    def admits(self, o: Origin) -> bool:
        return (self.host == o.host and (self.scheme is None or self.scheme == o.scheme)
                and (self.port is None or self.port == o.port))


@dataclass(frozen=True)
class ImagePolicy:
    """``serve.allowed_hosts`` (plus any hosts the deployment adds), ``serve.image_root`` and the size limit."""

    hosts: tuple[_HostRule, ...]
    buckets: frozenset[str]
    image_root: Path | None
    max_bytes: int

    @classmethod
    def build(cls, allowed: Iterable[str], image_root: str | None, max_bytes: int) -> ImagePolicy:
        hosts: list[_HostRule] = []
        buckets: set[str] = set()
        for raw in allowed:
            entry = raw.strip()
            if not entry:
                continue
            if entry.lower().startswith("s3://"):
                buckets.add(entry[5:].strip("/").split("/", 1)[0])
                continue
            parts = urlsplit(entry if "://" in entry else f"//{entry}")
            if not parts.hostname:
                raise ValueError(f"serve.allowed_hosts: {entry!r} is not a host, host:port, URL or s3://bucket")
            hosts.append(_HostRule(parts.scheme.lower() or None, parts.hostname.lower(), parts.port))
            s3 = _S3_HOST.match(parts.hostname.lower())
            if s3:
                buckets.add(s3.group("bucket"))
        root = Path(image_root).resolve() if image_root else None
        return cls(hosts=tuple(hosts), buckets=frozenset(buckets), image_root=root, max_bytes=max_bytes)


def _show(url: str) -> str:
    """A URL as we may say it: no query (a presigned URL's signature) and no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"[:200] if parts.scheme else parts.path[:200]


def _too_large(max_bytes: int) -> ServeError:
    return ServeError(413, "image_too_large", f"the image is larger than serve.max_image_bytes ({max_bytes} bytes)")


class ImageFetcher:
    """Reads image bytes by the rules above; one shared HTTP client (no redirects followed by itself)."""

    def __init__(self, policy: ImagePolicy, client: httpx.AsyncClient) -> None:
        self.policy = policy
        self.client = client

    async def fetch(self, ref: str, studio: StudioOrigin | None = None) -> bytes:
        ref = ref.strip()
        if not ref:
            raise ServeError(400, "no_image", "the image reference is empty")
        scheme = urlsplit(ref).scheme.lower()
        if scheme in ("http", "https"):
            return await self._http(ref, studio)
        if scheme == "s3":
            return await anyio.to_thread.run_sync(self._s3, ref)
        if scheme == "file":
            return await anyio.to_thread.run_sync(self._local, unquote(urlsplit(ref).path))
        if scheme and len(scheme) > 1:  # a Windows drive letter is a path, anything else a scheme we do not read
            raise ServeError(400, "unsupported_location", f"{scheme}:// images are not read here (http, https, "
                                                          "s3 or a path inside serve.image_root)")
        if ref.startswith("/") and not self._inside_root(ref):
            if studio is None:
                raise ServeError(403, "path_not_allowed",
                                 f"{ref[:120]} is not inside serve.image_root, and no Label Studio host is known "
                                 "for this project to resolve it against (Label Studio sends it with /setup)")
            return await self._http(urljoin(studio.url.rstrip("/") + "/", ref.lstrip("/")), studio)
        return await anyio.to_thread.run_sync(self._local, ref)

    # --- HTTP -----------------------------------------------------------------------------------------------
    def _allowed(self, o: Origin, studio: StudioOrigin | None) -> bool:
        return (studio is not None and studio.origin == o) or any(rule.admits(o) for rule in self.policy.hosts)

    async def _http(self, url: str, studio: StudioOrigin | None) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            origin = Origin.of(url)
            if origin is None:
                raise ServeError(400, "bad_url", f"{_show(url)} is not an http(s) URL with a host")
            if not self._allowed(origin, studio):
                raise ServeError(403, "host_not_allowed", f"{origin.host}:{origin.port} is neither in "
                                                          "serve.allowed_hosts nor Label Studio's own host (/setup)")
            headers: dict[str, str] = {}  # no Accept: image/*: Label Studio's upload view answers it with 406
            if studio is not None and studio.token and studio.origin == origin:
                headers["Authorization"] = f"Token {studio.token}"
            try:
                async with self.client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise ServeError(502, "image_fetch_failed", f"{_show(url)} redirected nowhere")
                        url = urljoin(url, location)
                        continue
                    if response.status_code == 404:
                        raise ServeError(404, "image_not_found", f"{_show(url)} answered 404")
                    if response.status_code >= 400:
                        raise ServeError(502, "image_fetch_failed",
                                         f"{_show(url)} answered {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                        raise _too_large(self.policy.max_bytes)
                    data = bytearray()
                    async for chunk in response.aiter_bytes(_CHUNK):
                        data += chunk
                        if len(data) > self.policy.max_bytes:
                            raise _too_large(self.policy.max_bytes)
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise ServeError(502, "image_fetch_failed", f"{_show(url)}: {type(exc).__name__}") from None
        raise ServeError(502, "image_fetch_failed", f"more than {MAX_REDIRECTS} redirects")

    # --- S3 ---------------------------------------------------------------------------------------------------
    def _s3(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        from alp.storage import StorageError, parse_s3_uri

        try:
            loc = parse_s3_uri(uri)
        except StorageError as exc:
            raise ServeError(400, "bad_url", str(exc)) from None
        if loc.bucket not in self.policy.buckets:
            raise ServeError(403, "bucket_not_allowed", f"bucket {loc.bucket} is not in serve.allowed_hosts "
                                                        f"(add s3://{loc.bucket})")
        try:
            obj: dict[str, Any] = aws.client("s3").get_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ServeError(404, "image_not_found", f"no such object: {_show(uri)}") from None
            raise ServeError(502, "image_fetch_failed", f"S3 refused {_show(uri)}: {code}") from None
        except BotoCoreError as exc:
            raise ServeError(502, "image_fetch_failed", f"S3: {type(exc).__name__}") from None
        body = obj["Body"]
        try:
            if int(obj.get("ContentLength") or 0) > self.policy.max_bytes:
                raise _too_large(self.policy.max_bytes)
            data = bytearray()
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                data += chunk
                if len(data) > self.policy.max_bytes:
                    raise _too_large(self.policy.max_bytes)
            return bytes(data)
        finally:
            body.close()

    # --- local files ----------------------------------------------------------------------------------------
    def _inside_root(self, path: str) -> bool:
        root = self.policy.image_root
        return root is not None and Path(path).resolve().is_relative_to(root)

    def _local(self, path: str) -> bytes:
        root = self.policy.image_root
        if root is None:
            raise ServeError(403, "path_not_allowed", "local paths are not read: serve.image_root is not set")
        if "\x00" in path:
            raise ServeError(400, "bad_path", "the path holds a NUL character")
        resolved = (root / path).resolve()  # an absolute path replaces the root here
        if not resolved.is_relative_to(root):
            raise ServeError(403, "path_not_allowed", "the path is outside serve.image_root")
        if not resolved.is_file():
            raise ServeError(404, "image_not_found", f"no such file under serve.image_root: {path[:200]}")
        if resolved.stat().st_size > self.policy.max_bytes:
            raise _too_large(self.policy.max_bytes)
        with open(resolved, "rb") as fh:
            data = fh.read(self.policy.max_bytes + 1)
        if len(data) > self.policy.max_bytes:
            raise _too_large(self.policy.max_bytes)
        return data


def decode(data: bytes, inference: InferenceSettings) -> DecodedImage:
    """Decode with the pipeline's limits; every rejection becomes a 415 or 422 with the decoder's reason."""
    try:
        return decode_image(data, max_pixels=inference.max_image_pixels, min_side=inference.min_image_side)
    except ImageRejected as exc:
        status = 415 if exc.reason in _UNSUPPORTED_MEDIA else 422
        raise ServeError(status, exc.reason, exc.detail[:300]) from None
