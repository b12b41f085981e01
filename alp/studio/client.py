"""A typed client of Label Studio's REST API: the one adapter between this project and a Label Studio server.

Why not Label Studio's own SDK: ``label-studio-sdk`` 2.1 pins ``numpy<2.3`` and pulls pandas, opencv and nltk,
which would downgrade the inference stack's numpy in the same environment. The calls the pipeline needs are
few and documented (projects, import, tasks, annotations, storages, health), so they are made here over httpx
with the same token the SDK takes (``LabelStudio(base_url=url, api_key=token)`` works with it: the tests
check that with the SDK installed beside the server).

Every call retries connection errors, 429 and 5xx with backoff; what still fails raises
:class:`StudioUnavailable` naming the URL and the status, never the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class StudioError(RuntimeError):
    """Label Studio answered, but not with what the call needs (a 4xx, an unexpected body)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StudioUnavailable(StudioError):
    """Label Studio could not be reached, or kept failing, after the retries."""


class StudioProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    title: str
    label_config: str = ""
    task_number: int | None = None
    finished_task_number: int | None = None
    maximum_annotations: int = 1


class StudioAnnotation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    result: list[dict[str, Any]] = Field(default_factory=list)
    completed_by: int | dict[str, Any] | None = None
    lead_time: float | None = None
    was_cancelled: bool = False
    created_at: str | None = None

    @property
    def annotator_id(self) -> str:
        who = self.completed_by
        if isinstance(who, dict):
            who = who.get("id")
        return f"label-studio-user-{who}" if who is not None else f"label-studio-annotation-{self.id}"


class StudioTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    data: dict[str, Any] = Field(default_factory=dict)
    is_labeled: bool = False
    total_annotations: int = 0
    annotations: list[StudioAnnotation] = Field(default_factory=list)


class StudioClient:
    """Calls one Label Studio server with one API token (legacy ``Token`` scheme; see :mod:`alp.studio.server`)."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, retries: int = 4,
                 backoff_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._retries = retries
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Token {token}"}, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries; the decoded JSON body (``None`` for an empty one)."""
        where = f"{method} {self.url}{path}"
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise StudioUnavailable(f"Label Studio at {self.url} is unreachable ({where}: "
                                            f"{type(exc).__name__}) after {self._retries + 1} tries") from None
                self._wait(attempt, where, type(exc).__name__)
                continue
            if response.status_code in RETRY_STATUSES:
                if last:
                    raise StudioUnavailable(f"Label Studio at {self.url} answered {response.status_code} to {where} "
                                            f"after {self._retries + 1} tries")
                self._wait(attempt, where, str(response.status_code))
                continue
            if response.status_code >= 400:
                raise StudioError(f"Label Studio answered {response.status_code} to {where}: "
                                  f"{response.text[:300]}", status=response.status_code)
            return response.json() if response.content else None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, where: str, why: str) -> None:
        delay = self._backoff * 2 ** attempt
        log.warning("label studio: %s failed (%s); retrying in %.1f s", where, why, delay)
        self._sleep(delay)

    # --- server -------------------------------------------------------------------------------------------
    def health(self) -> bool:
        try:
            response = self._http.get("/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def whoami(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/current-user/whoami"))

    # --- projects -----------------------------------------------------------------------------------------
    def projects(self) -> list[StudioProject]:
        out: list[StudioProject] = []
        page = 1
        while True:
            body = self.request("GET", "/api/projects/", params={"page": page, "page_size": 100})
            rows = body.get("results", []) if isinstance(body, dict) else body
            out.extend(StudioProject.model_validate(r) for r in rows)
            if not isinstance(body, dict) or not body.get("next"):
                return out
            page += 1

    def project(self, project_id: int) -> StudioProject:
        return StudioProject.model_validate(self.request("GET", f"/api/projects/{project_id}/"))

    def create_project(self, title: str, label_config: str, *, maximum_annotations: int = 1,
                       description: str = "") -> StudioProject:
        body = {"title": title, "description": description, "label_config": label_config,
                "maximum_annotations": maximum_annotations, "overlap_cohort_percentage": 100,
                "show_collab_predictions": True, "show_skip_button": False, "enable_empty_annotation": True,
                "sampling": "Sequential sampling"}
        return StudioProject.model_validate(self.request("POST", "/api/projects/", json=body))

    def update_project(self, project_id: int, **fields: Any) -> StudioProject:
        return StudioProject.model_validate(self.request("PATCH", f"/api/projects/{project_id}/", json=fields))

    # --- tasks --------------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks (``data`` plus ``predictions``); the ids of the created tasks, in order."""
        body = self.request("POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                            json=tasks)
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) != len(tasks):
            raise StudioError(f"import into project {project_id} returned {str(body)[:200]}, not {len(tasks)} task ids")
        return [int(i) for i in ids]

    def tasks(self, project_id: int, *, page_size: int = 100) -> Iterator[StudioTask]:
        """Every task of the project with its annotations."""
        page = 1
        while True:
            try:
                body = self.request("GET", "/api/tasks/", params={"project": project_id, "page": page,
                                                                   "page_size": page_size, "fields": "all"})
            except StudioError as exc:
                if exc.status == 404:  # past the last page
                    return
                raise
            rows = body.get("tasks", []) if isinstance(body, dict) else body
            for row in rows:
                yield StudioTask.model_validate(row)
            total = body.get("total") if isinstance(body, dict) else None
            if not rows or (isinstance(total, int) and page * page_size >= total):
                return
            page += 1

    def delete_task(self, task_id: int) -> None:
        self.request("DELETE", f"/api/tasks/{task_id}/")

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], *, lead_time: float | None = None
                          ) -> StudioAnnotation:
        body: dict[str, Any] = {"result": result, "was_cancelled": False, "ground_truth": False}
        if lead_time is not None:
            body["lead_time"] = lead_time
        return StudioAnnotation.model_validate(self.request("POST", f"/api/tasks/{task_id}/annotations/", json=body))

    # --- storage ------------------------------------------------------------------------------------------
    def s3_storages(self, project_id: int) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/storages/s3/", params={"project": project_id}) or [])

    def add_s3_storage(self, project_id: int, *, bucket: str, prefix: str = "", region: str | None = None,
                       endpoint: str | None = None, access_key_id: str | None = None,
                       secret_access_key: str | None = None, presign_ttl_minutes: int = 60) -> dict[str, Any]:
        """An S3 source storage used only to presign the images tasks name by ``s3://`` URI (never synced:
        the pipeline imports its own tasks). Without keys Label Studio signs with its own role."""
        body: dict[str, Any] = {"project": project_id, "title": f"images: s3://{bucket}/{prefix}", "bucket": bucket,
                                "prefix": prefix, "presign": True, "presign_ttl": presign_ttl_minutes,
                                "use_blob_urls": False, "recursive_scan": True}
        optional = {"region_name": region, "s3_endpoint": endpoint, "aws_access_key_id": access_key_id,
                    "aws_secret_access_key": secret_access_key}
        body.update({k: v for k, v in optional.items() if v})
        return dict(self.request("POST", "/api/storages/s3/", json=body))

    def update_s3_storage(self, storage_id: int, *, endpoint: str | None, access_key_id: str | None = None,
                          secret_access_key: str | None = None) -> dict[str, Any]:
        body = {"s3_endpoint": endpoint or "", "aws_access_key_id": access_key_id or "",
                "aws_secret_access_key": secret_access_key or ""}
        return dict(self.request("PATCH", f"/api/storages/s3/{storage_id}", json=body))


