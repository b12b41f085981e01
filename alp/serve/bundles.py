"""The bundle being served, and its swap when the registry approves a newer one.

Two modes. ``--bundle DIR``: that folder, its files checked against ``bundle.json`` (:func:`alp.bundle.load_bundle`),
for the life of the process. Otherwise the model registry's current Approved bundle, its ``bundle.json`` checked
against the hash recorded at registration and every model against ``bundle.json``
(:func:`alp.registry.verify_registered`); with none approved, the zero-shot bundle of the settings if there is one
(checked against ``inference.zero_shot_bundle_sha256``), else nothing: the holder says why and requests are refused
with 503. :meth:`BundleHolder.refresh` (called every ``serve.reload_seconds``) loads a newly approved bundle beside
the current one and swaps the reference under a lock; a request holds the engine it started with (a
:meth:`~BundleHolder.lease`), so no request fails or mixes two bundles during a swap, and the old engine is closed
when its last request ends. A failed refresh keeps the current bundle and says why in :meth:`status`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alp.bundle import LoadedBundle, load_bundle
from alp.serve.errors import ServeError
from alp.settings import Settings
from inference.engine import InferenceEngine
from inference.head_backends import RekognitionHeadDetector

log = logging.getLogger(__name__)

EngineFactory = Callable[[LoadedBundle, Settings], InferenceEngine]


@dataclass
class ServedBundle:
    """An opened engine and where its bundle came from."""

    engine: InferenceEngine
    source: str  # "folder", "registry" or "zero-shot"
    uri: str
    registry_arn: str | None
    loaded_at: float
    users: int = 0
    retired: bool = False

    @property
    def bundle_id(self) -> str:
        return self.engine.bundle_id


class BundleHolder:
    """Holds the served engine; thread-safe (leases are taken on the event loop, refreshes run in a thread)."""

    def __init__(self, settings: Settings, *, bundle_uri: str | None, cache_dir: str | Path,
                 engine_factory: EngineFactory = InferenceEngine) -> None:
        self.settings = settings
        self.bundle_uri = bundle_uri
        self.cache_dir = Path(cache_dir)
        self.engine_factory = engine_factory
        self._lock = threading.Lock()
        self._current: ServedBundle | None = None
        self._missing_reason = "no bundle loaded yet"
        self._last_error: str | None = None
        self._last_check: float | None = None
        self.swaps = 0

    @property
    def mode(self) -> str:
        return "folder" if self.bundle_uri else "registry"

    @property
    def current(self) -> ServedBundle | None:
        return self._current

    def _open(self, loaded: LoadedBundle, source: str, arn: str | None) -> ServedBundle:
        engine = self.engine_factory(loaded, self.settings)
        engine.open()
        return ServedBundle(engine=engine, source=source, uri=loaded.uri, registry_arn=arn, loaded_at=time.time())

    def load_folder(self) -> ServedBundle:
        """``--bundle``: load it now; a missing or tampered bundle raises (the command fails before serving)."""
        assert self.bundle_uri is not None
        served = self._open(load_bundle(self.bundle_uri, self.cache_dir), "folder", None)
        self._install(served)
        return served

    def refresh(self) -> bool:
        """Registry mode: load the current Approved bundle if it is not the one served; True when swapped.

        Raises nothing: a registry or bundle error is recorded (:meth:`status`) and the current bundle kept.
        """
        if self.bundle_uri:
            return False
        from alp import registry
        from inference.runner import verify_zero_shot_bundle

        self._last_check = time.time()
        try:
            champion = registry.latest_approved(self.settings)
            current = self._current
            if champion is not None:
                if current is not None and current.registry_arn == champion.arn:
                    self._last_error = None
                    return False
                served = self._open(registry.verify_registered(champion, self.cache_dir), "registry", champion.arn)
            else:
                inf = self.settings.inference
                if not inf.zero_shot_bundle:
                    self._missing_reason = ("no approved bundle in the model registry yet (and no "
                                            "inference.zero_shot_bundle): nothing to suggest from")
                    self._last_error = None
                    return False
                if current is not None and current.uri == inf.zero_shot_bundle:
                    return False
                uri = verify_zero_shot_bundle(inf.zero_shot_bundle, inf.zero_shot_bundle_sha256)
                served = self._open(load_bundle(uri, self.cache_dir), "zero-shot", None)
        except Exception as exc:  # a registry outage or a refused bundle must not take the service down
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            if error != self._last_error:  # once per distinct failure, not every reload_seconds
                log.warning("serve: bundle refresh failed, keeping %s: %s",
                            self._current.bundle_id if self._current else "no bundle", error)
            self._last_error = error
            if self._current is None:
                self._missing_reason = f"the registry's bundle could not be loaded: {error}"
            return False
        self._last_error = None
        self._install(served)
        log.info("serve: now serving bundle %s (%s)", served.bundle_id, served.source)
        return True

    def _install(self, served: ServedBundle) -> None:
        idle = False
        with self._lock:
            old, self._current = self._current, served
            if old is not None:
                self.swaps += 1
                old.retired = True
                idle = old.users == 0
                _hand_over(old.engine, served.engine)
        if old is not None and idle:
            old.engine.close()

    @contextlib.contextmanager
    def lease(self) -> Iterator[ServedBundle]:
        """The current bundle for one request (503 when there is none); it stays open until the request ends."""
        with self._lock:
            served = self._current
            if served is None:
                raise ServeError(503, "no_bundle", self._missing_reason)
            served.users += 1
        try:
            yield served
        finally:
            with self._lock:
                served.users -= 1
                close = served.retired and served.users == 0
            if close:
                served.engine.close()

    def status(self) -> dict[str, Any]:
        served = self._current
        out: dict[str, Any] = {"mode": self.mode, "bundle_id": served.bundle_id if served else None,
                               "source": served.source if served else None, "swaps": self.swaps}
        if served is None:
            out["reason"] = self._missing_reason
        if self._last_error:
            out["last_refresh_error"] = self._last_error
        if self.mode == "registry":
            out["reload_seconds"] = self.settings.serve.reload_seconds
        return out

    def close(self) -> None:
        """Release what the served engine holds (a Rekognition model it started); it reopens on next use."""
        served = self._current
        if served is not None:
            served.engine.close()


def _hand_over(old: InferenceEngine, new: InferenceEngine) -> None:
    """A Rekognition head model the old engine started is the new one's to stop (same model version): closing
    the old engine must not stop it under the new one."""
    a, b = old.head_detector, new.head_detector
    if (isinstance(a, RekognitionHeadDetector) and isinstance(b, RekognitionHeadDetector) and a.arn == b.arn
            and a.started_here):
        a.started_here, b.started_here = False, True
