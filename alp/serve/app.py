"""The service: Label Studio's ML backend protocol and a plain JSON API on Starlette, run by uvicorn.

Endpoints (the protocol's as Label Studio 1.23 calls them, :mod:`alp.serve.protocol`):

* ``GET /health``, ``GET /``: ``{"status": "UP", "model_class", "model_version": <bundle id or null>, "bundle"}``;
  always 200 while the process serves (Label Studio gives it one second), ``bundle.reason`` says why there is
  no model;
* ``POST /setup``: remembers the project's labeling config, Label Studio's URL and token; ``{"model_version"}``;
  400 when the config has nothing we suggest;
* ``POST /predict``: ``{"results": [{"result", "score", "model_version"}, ...]}``, one per task in order, or, with
  ``params.context`` (interactive), the keypoints of the person just outlined (:mod:`alp.serve.assist`);
* ``POST /webhook``, ``POST /train``: acknowledged, nothing is trained here; ``GET /versions``: the served bundle;
* ``POST /v1/predict``: ``{"image_url": ...}`` or image bytes (``Content-Type: image/*``) -> our own JSON
  (:class:`alp.serve.predictions.ApiPrediction`).

Every refusal is a 4xx (5xx only for our side: no bundle, busy, an image host failing) with
``{"error", "reason", "detail"}``; nothing here logs a body, a header or a token. Decoding and inference run in a
bounded thread pool (``workers``) with at most ``max_pending`` jobs waiting (then 503), so the event loop keeps
answering ``/health`` during inference; a request body must arrive within ``body_timeout_seconds`` (408), so a
slow client holds only its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import httpx
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alp.serve import assist as assisting
from alp.serve import predictions
from alp.serve.bundles import BundleHolder, EngineFactory, ServedBundle
from alp.serve.errors import ServeError
from alp.serve.images import ImageFetcher, ImagePolicy, Origin, StudioOrigin, decode
from alp.serve.protocol import (
    ApiRequest,
    ContextRegion,
    LabelConfig,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    StudioTask,
    TaskPrediction,
    WebhookRequest,
    parse_label_config,
    parse_model,
)
from alp.settings import Settings
from inference.engine import ImagePrediction, InferenceEngine
from inference.judgement import RouteDecision

log = logging.getLogger(__name__)

MODEL_CLASS = "alp.InferenceEngine"
DEFAULT_WORKERS = 2
DEFAULT_MAX_PENDING = 16
BODY_TIMEOUT_SECONDS = 30.0
MAX_JSON_BYTES = 32_000_000  # "Retrieve predictions" sends every selected task, with its predictions, at once
OFF_LOOP_JSON_BYTES = 1_000_000
MAX_PROJECTS = 256
FETCH_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
NO_TRAINING = ("acknowledged: this service does not train; models are trained, gated and approved by the "
               "pipeline, and a newly approved bundle is served within serve.reload_seconds")

T = TypeVar("T")


@dataclass
class ProjectState:
    """What ``/setup`` told us about one Label Studio project."""

    config: LabelConfig
    studio: StudioOrigin | None


@dataclass
class Service:
    """The app's state: settings, the bundle holder, the image rules, the worker pool and the projects seen."""

    settings: Settings
    holder: BundleHolder
    policy: ImagePolicy
    workers: int
    max_pending: int
    body_timeout_seconds: float
    projects: OrderedDict[str, ProjectState] = field(default_factory=OrderedDict)
    executor: ThreadPoolExecutor | None = None
    fetcher: ImageFetcher | None = None
    pending: int = 0
    reload_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="alp-serve")
        self.fetcher = ImageFetcher(self.policy, httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False))
        if self.holder.mode == "registry":
            await anyio.to_thread.run_sync(self.holder.refresh)
            self.reload_task = asyncio.create_task(self._reload_forever())

    async def stop(self) -> None:
        if self.reload_task is not None:
            self.reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reload_task
            self.reload_task = None
        if self.fetcher is not None:
            await self.fetcher.client.aclose()
            self.fetcher = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        await anyio.to_thread.run_sync(self.holder.close)

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serve.reload_seconds)
            await anyio.to_thread.run_sync(self.holder.refresh)

    # --- work ---------------------------------------------------------------------------------------------
    async def compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the worker pool; 503 when ``max_pending`` jobs already wait or run."""
        if self.executor is None:
            raise ServeError(503, "starting", "the service is not started yet")
        if self.pending >= self.max_pending:
            raise ServeError(503, "busy", f"{self.pending} images are being predicted; try again shortly")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))
        finally:
            self.pending -= 1

    def remember(self, project: str, state: ProjectState) -> None:
        self.projects[project] = state
        self.projects.move_to_end(project)
        while len(self.projects) > MAX_PROJECTS:
            self.projects.popitem(last=False)

    def health(self) -> dict[str, Any]:
        served = self.holder.current
        return {"status": "UP", "model_class": MODEL_CLASS, "model_version": served.bundle_id if served else None,
                "bundle": self.holder.status()}


# --- request bodies --------------------------------------------------------------------------------------------

async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes (413) and within ``timeout`` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, "body_too_large", f"the body has {declared} bytes (at most {limit})")

    async def collect() -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise ServeError(413, "body_too_large", f"the body is larger than {limit} bytes")
        return bytes(data)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise ServeError(408, "body_timeout", f"the body did not arrive within {timeout:g} s") from None


async def read_json(request: Request, service: Service, limit: int = MAX_JSON_BYTES) -> Any:
    body = await read_body(request, limit, service.body_timeout_seconds)
    if not body.strip():
        raise ServeError(400, "malformed_json", "the body is empty; send a JSON object")
    try:
        if len(body) > OFF_LOOP_JSON_BYTES:  # a large batch: parse it off the event loop
            return await anyio.to_thread.run_sync(json.loads, body)
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServeError(400, "malformed_json", f"the body is not JSON ({exc})") from None


def _json(model: BaseModel | dict[str, Any], status: int = 200) -> JSONResponse:
    if isinstance(model, PredictResponse):
        content = model.to_json()
    elif isinstance(model, BaseModel):
        content = model.model_dump(mode="json")
    else:
        content = model
    return JSONResponse(content, status_code=status)


# --- the work on one image (worker threads) ------------------------------------------------------------------

def _infer(data: bytes, served: ServedBundle, key: str, settings: Settings) -> tuple[ImagePrediction, RouteDecision]:
    image = decode(data, settings.inference)
    engine = served.engine
    pred = engine.predict_decoded([image], [key])[0]
    return pred, predictions.judge(pred, key, engine.keypoint_names, settings.judgement)


def _assist(data: bytes, served: ServedBundle, key: str, regions: Sequence[ContextRegion], config: LabelConfig,
            settings: Settings) -> tuple[list[dict[str, Any]], float | None]:
    if config.keypoints is None:  # a heads-only config: no keypoint control to put a person's points in
        return [], None
    image = decode(data, settings.inference)
    drawn = assisting.drawn_box(regions, config, image.width, image.height)
    if drawn is None:
        return [], None
    engine = served.engine
    pred, person = assisting.assist(engine, image, drawn, settings.inference.min_image_side)
    if person is None:
        return [], None
    decision = predictions.judge(assisting.person_only(pred, person), key, engine.keypoint_names, settings.judgement)
    # unique region ids: the labeling UI adds these regions to what is drawn, assist after assist
    result = predictions.keypoint_results(person, 0, config, engine.keypoint_names, image.width, image.height,
                                          with_box=False, prefix=f"a{secrets.token_hex(3)}-")
    return result, predictions.rounded(decision.score)


# --- the endpoints --------------------------------------------------------------------------------------------

Handler = Callable[[Request, Service], Awaitable[Response]]


def _endpoint(service: Service, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Every answer is JSON; a refusal logs one line (method, path, status, reason), never the body."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request, service)
        except ServeError as exc:
            log.info("serve: %s %s -> %d %s", request.method, request.url.path, exc.status, exc.reason)
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:  # a bug of ours: 500 with its type, the traceback only in our log
            log.exception("serve: %s %s failed", request.method, request.url.path)
            error = ServeError(500, "internal_error", type(exc).__name__)
            return JSONResponse(error.body(), status_code=500)

    return run


async def health(request: Request, service: Service) -> Response:
    return _json(service.health())


async def versions(request: Request, service: Service) -> Response:
    served = service.holder.current
    return _json({"versions": [served.bundle_id] if served else []})


async def setup(request: Request, service: Service) -> Response:
    req: SetupRequest = parse_model(SetupRequest, await read_json(request, service))
    config = parse_label_config(req.label_config)
    studio = None
    if req.hostname:
        if Origin.of(req.hostname) is None:
            raise ServeError(400, "bad_hostname", "hostname is not an http(s) URL")
        token = req.access_token.get_secret_value() if req.access_token is not None else None
        studio = StudioOrigin(url=req.hostname, token=token or None)
    state = ProjectState(config=config, studio=studio)
    if service.projects.get(req.project_id) != state:  # Label Studio repeats /setup before every batch
        log.info("serve: project %s set up (%s)", req.project_id[:40], json.dumps(config.summary(), sort_keys=True))
    service.remember(req.project_id, state)
    served = service.holder.current
    return _json({"model_version": served.bundle_id if served else None})


def _image_ref(task: StudioTask, config: LabelConfig) -> str:
    value = task.data.get(config.data_key)
    if value is None:
        raise ServeError(400, "missing_image_field",
                         f"task {task.id} has no data field {config.data_key!r} (the labeling config's Image "
                         f"{config.image_name!r} reads ${config.data_key})")
    if not isinstance(value, str):
        raise ServeError(400, "bad_image_field", f"task {task.id}: data field {config.data_key!r} is not a URL")
    return value


async def _predict_task(task: StudioTask, config: LabelConfig, studio: StudioOrigin | None, served: ServedBundle,
                        service: Service, gate: asyncio.Semaphore) -> TaskPrediction:
    ref = _image_ref(task, config)
    assert service.fetcher is not None
    async with gate:
        data = await service.fetcher.fetch(ref, studio)
        pred, decision = await service.compute(_infer, data, served, ref, service.settings)
    names = served.engine.keypoint_names
    persons = None
    outlined = assisting.task_person_box(task.predictions, config, pred.width, pred.height)
    if outlined is not None:  # a keypoint task is about one person: the one its imported prediction outlines
        chosen = predictions.best_person(pred, outlined)
        persons = [chosen] if chosen is not None else None
    return TaskPrediction(result=predictions.studio_results(pred, config, names, persons),
                          score=predictions.rounded(decision.score), model_version=served.bundle_id)


async def predict(request: Request, service: Service) -> Response:
    req: PredictRequest = parse_model(PredictRequest, await read_json(request, service))
    state = service.projects.get(req.project_id)
    if req.label_config:
        config = parse_label_config(req.label_config)
    elif state is not None:
        config = state.config
    else:
        raise ServeError(400, "no_label_config", "the request has no label_config and /setup was not called for "
                                                 f"project {req.project_id or '?'}")
    studio = state.studio if state is not None else None
    with service.holder.lease() as served:
        context = req.context
        if context is not None and req.tasks:
            task = req.tasks[0]
            ref = _image_ref(task, config)
            assert service.fetcher is not None
            data = await service.fetcher.fetch(ref, studio)
            result, score = await service.compute(_assist, data, served, ref, context.result, config,
                                                  service.settings)
            answer = TaskPrediction(result=result, score=score, model_version=served.bundle_id)
            return _json(PredictResponse(results=[answer], model_version=served.bundle_id))
        gate = asyncio.Semaphore(service.workers)
        outcomes = await asyncio.gather(
            *(_predict_task(t, config, studio, served, service, gate) for t in req.tasks), return_exceptions=True)
        results: list[TaskPrediction] = []
        refusals: list[ServeError] = []
        for outcome in outcomes:
            if isinstance(outcome, ServeError):
                refusals.append(outcome)
                results.append(TaskPrediction(result=[], score=None, model_version=served.bundle_id,
                                              error=f"{outcome.reason}: {outcome.detail}"))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(outcome)
        # Our side failed (busy, an image host down): refuse the batch, so nothing empty is stored and a retry
        # predicts it. Every task refused for its input: the first refusal. Otherwise the good ones, and
        # the refused ones empty with their reason (Label Studio wants one result per task, in order).
        ours = [e for e in refusals if e.status >= 500]
        if ours:
            raise ours[0]
        if refusals and len(refusals) == len(req.tasks):
            raise refusals[0]
        for e in refusals:
            log.info("serve: a task of a batch refused: %d %s", e.status, e.reason)
        return _json(PredictResponse(results=results, model_version=served.bundle_id))


async def webhook(request: Request, service: Service) -> Response:
    event: WebhookRequest = parse_model(WebhookRequest, await read_json(request, service))
    return _json({"status": "ok", "action": event.action, "note": NO_TRAINING})


async def train(request: Request, service: Service) -> Response:
    # The body (every annotated task) is not read: nothing here uses it.
    return _json({"status": "ok", "job": None, "note": NO_TRAINING})


async def api_predict(request: Request, service: Service) -> Response:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    assert service.fetcher is not None
    if media.startswith("image/"):
        limit = service.settings.serve.max_image_bytes
        data = await read_body(request, limit, service.body_timeout_seconds)
        if not data:
            raise ServeError(400, "no_image", "the body is empty")
        key = "sha256:" + hashlib.sha256(data).hexdigest()
    elif media in ("application/json", ""):
        req: ApiRequest = parse_model(ApiRequest, await read_json(request, service, limit=64_000))
        key = req.image_url
        data = await service.fetcher.fetch(key, None)
    else:
        raise ServeError(415, "unsupported_media_type", f"{media}: send JSON {{\"image_url\": ...}} or the image "
                                                        "bytes with Content-Type image/*")
    with service.holder.lease() as served:
        pred, decision = await service.compute(_infer, data, served, key, service.settings)
        return _json(predictions.api_prediction(pred, decision, served.bundle_id, served.engine.keypoint_names))


# --- the app --------------------------------------------------------------------------------------------------

def create_app(settings: Settings, *, bundle_uri: str | None = None, cache_dir: str | Path | None = None,
               extra_allowed_hosts: Sequence[str] = (), workers: int = DEFAULT_WORKERS,
               max_pending: int = DEFAULT_MAX_PENDING, body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
               engine_factory: EngineFactory = InferenceEngine) -> Starlette:
    """The ASGI app. ``bundle_uri``: serve that bundle (loaded and verified now: a bad one raises here); None:
    the registry's current Approved bundle, loaded at start-up and refreshed every ``serve.reload_seconds``.
    ``app.state.service`` is the :class:`Service` (its ``holder`` says what is served)."""
    if workers < 1 or max_pending < workers:
        raise ValueError(f"workers ({workers}) must be >= 1 and max_pending ({max_pending}) >= workers")
    serve = settings.serve
    policy = ImagePolicy.build([*serve.allowed_hosts, *extra_allowed_hosts], serve.image_root, serve.max_image_bytes)
    holder = BundleHolder(settings, bundle_uri=bundle_uri, engine_factory=engine_factory,
                          cache_dir=Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "alp-bundles")
    if bundle_uri:
        holder.load_folder()
    service = Service(settings=settings, holder=holder, policy=policy, workers=workers, max_pending=max_pending,
                      body_timeout_seconds=body_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _endpoint(service, handler), methods=[method])

    app = Starlette(lifespan=lifespan, routes=[
        route("/", health, "GET"), route("/health", health, "GET"), route("/versions", versions, "GET"),
        route("/setup", setup, "POST"), route("/predict", predict, "POST"), route("/webhook", webhook, "POST"),
        route("/train", train, "POST"), route("/v1/predict", api_predict, "POST"),
    ])
    app.state.service = service
    return app


# --- running it -----------------------------------------------------------------------------------------------

def uvicorn_config(app: Starlette, host: str, port: int, *, log_config: dict[str, Any] | None = None) -> Any:
    """uvicorn's settings for this service: no ``Server`` header, no proxy headers trusted, a short keep-alive.
    ``log_config`` None leaves the process's logging as it is."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, lifespan="on", proxy_headers=False, server_header=False,
                          timeout_keep_alive=5, limit_concurrency=256, log_config=log_config)


def serve_forever(app: Starlette, host: str, port: int) -> None:
    """Serve until interrupted (``alp serve``): uvicorn's log format, and this package's lines (refusals with
    their reasons, bundle swaps) beside uvicorn's on stderr."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["alp"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.Server(uvicorn_config(app, host, port, log_config=config)).run()


@contextlib.contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0, *,
            start_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (tests, benchmarks); yields the base URL. ``port`` 0 picks a
    free one. The process's logging is left as it is (records go to the root logger's handlers)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, bound))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="alp-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the service did not start on {host}:{bound}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
