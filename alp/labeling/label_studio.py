"""The ``label-studio`` backend: people label the job's items in Label Studio, with the model's proposals prefilled.

One Label Studio project per task kind (``heads``, ``keypoints``), created from the configs in
``gt_templates/label-studio/``. A job is the set of tasks it imported into its kind's project; every task
carries the job's name, the item's ``alp-task-id`` and its index in the job's input manifest, the judgement's
reason as text, and the model's proposal as a Label Studio prediction, built from the same ``taskInput`` the
Ground Truth templates render (:func:`alp.labeling.pre_annotation.build_task_input`). Images are named by
their ``s3://`` URI and presigned by Label Studio's S3 storage (its own role in the cloud; the embedded
AWS's endpoint locally), so nothing is copied.

A job is finished when every task has ``labeling.workers_per_object`` submitted annotations (Label Studio's
overlap), or was deleted in the UI, or ``labeling.task_availability_seconds`` have passed since the import.
Then, once: the annotations become Ground Truth worker answers (the form shape the templates submit), the
consolidation request goes through the post-annotation logic (consolidation, gold scoring, worker reports)
and the output manifest is written where Ground Truth writes it. Nothing of the label step changes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from alp import storage
from alp.labeling.backend import OUTPUT_MANIFEST, TASK_ID_KEY, JobSpec, JobStatus, LabelingBackend
from alp.labeling.contracts import (
    ELAPSED_FIELD,
    HEAD_ELEMENT,
    HEAD_LABEL,
    KEYPOINT_ELEMENT,
    VISIBILITY_PREFIX,
    ConsolidatedObject,
    JobKind,
)
from alp.labeling.job_output import PAYLOAD_PATH, consolidation_event, output_lines
from alp.labeling.post_annotation import post_annotation
from alp.labeling.pre_annotation import build_task_input
from alp.manifest import PREANNOTATION_KEY, read_manifest, write_manifest
from alp.settings import Settings
from alp.studio import configs
from alp.studio.client import StudioClient, StudioTask
from alp.studio.server import StudioConnection

log = logging.getLogger(__name__)

# Where a process finds Label Studio: a local run's studio.json (`alp studio up`); the hosted service's URL and
# the Secrets Manager secret holding its token (the stack); or a token given directly (a self-run server).
STUDIO_FILE_ENV = "ALP_STUDIO_FILE"
URL_ENV = "ALP_STUDIO_URL"
TOKEN_ENV = "ALP_STUDIO_TOKEN"  # noqa: S105  # nosec B105
TOKEN_SECRET_ENV = "ALP_STUDIO_TOKEN_SECRET"  # noqa: S105  # nosec B105
RECORD_FILE = "alp-studio-job.json"
STATUS_FILE = "alp-studio-status.json"
# Every prediction carries this one model_version (the bundle that proposed it is the task's ``alp_model``):
# Label Studio's labeling stream prefills a task only with predictions whose model_version is the project's
# ``model_version``, which it sets once, from the first import; per-bundle versions would leave every batch
# of a newer model without its proposals there.
PREDICTION_MODEL_VERSION = "alp-model"
POINT_WIDTH = 0.6  # a keypoint region's drawn size, percent of the image width


class StudioJobRecord(BaseModel):
    """``<job folder>/alp-studio-job.json``: the Label Studio tasks a job imported (index -> task id)."""

    name: str
    kind: JobKind
    project: int
    url: str
    created_at: float
    tasks: dict[int, int] = Field(default_factory=dict, description="input-manifest index -> Label Studio task id")


def studio_connection(settings: Settings) -> StudioConnection:
    """How this process reaches Label Studio: a local run's studio.json, else the URL and token the stack gives
    the steps (the token from Secrets Manager), else the settings."""
    studio_file = os.environ.get(STUDIO_FILE_ENV)
    if studio_file:
        return StudioConnection.read(Path(studio_file))
    url = os.environ.get(URL_ENV) or settings.labeling.studio.url
    token = os.environ.get(TOKEN_ENV)
    secret_name = os.environ.get(TOKEN_SECRET_ENV) or settings.labeling.studio.token_secret_name
    if token is None and secret_name:
        from alp import aws

        token = str(aws.client("secretsmanager").get_secret_value(SecretId=secret_name)["SecretString"]).strip()
    if not url or not token:
        raise ValueError("the label-studio backend cannot reach Label Studio: set ALP_STUDIO_FILE to the studio.json "
                         "`alp studio up` wrote, or settings.labeling.studio.url with a token "
                         "(ALP_STUDIO_TOKEN, or the secret named by settings.labeling.studio.token_secret_name)")
    return StudioConnection(url=url, token=token)


# --- taskInput -> Label Studio task ----------------------------------------------------------------------

def _percent(value: float, whole: float) -> float:
    return round(100.0 * value / whole, 4)


def _head_prediction(task_input: dict[str, Any]) -> list[dict[str, Any]]:
    size = task_input.get("imageSize")
    if not size:
        return []
    w, h = size["width"], size["height"]
    return [{
        "id": f"head-{i}", "from_name": configs.HEADS, "to_name": configs.IMAGE, "type": "rectanglelabels",
        "original_width": w, "original_height": h, "image_rotation": 0,
        "value": {"x": _percent(b["left"], w), "y": _percent(b["top"], h), "width": _percent(b["width"], w),
                  "height": _percent(b["height"], h), "rotation": 0, "rectanglelabels": [HEAD_LABEL]},
    } for i, b in enumerate(task_input.get("initialBoxes", []))]


def _keypoint_prediction(task_input: dict[str, Any]) -> list[dict[str, Any]]:
    size = task_input["imageSize"]
    w, h = size["width"], size["height"]
    box = task_input["highlight"]  # percent already
    result: list[dict[str, Any]] = [{
        "id": "person", "from_name": configs.PERSON, "to_name": configs.IMAGE, "type": "rectanglelabels",
        "original_width": w, "original_height": h, "image_rotation": 0, "readonly": True,
        "value": {"x": box["left"], "y": box["top"], "width": box["width"], "height": box["height"], "rotation": 0,
                  "rectanglelabels": [configs.PERSON_LABEL]},
    }]
    occluded = {row["name"] for row in task_input.get("points", []) if row.get("occluded")}
    for point in task_input.get("initialKeypoints", []):
        region = f"kp-{point['label']}"
        common = {"id": region, "to_name": configs.IMAGE, "original_width": w, "original_height": h,
                  "image_rotation": 0}
        value = {"x": _percent(point["x"], w), "y": _percent(point["y"], h), "width": POINT_WIDTH}
        result.append({**common, "from_name": configs.KEYPOINTS, "type": "keypointlabels",
                       "value": {**value, "keypointlabels": [point["label"]]}})
        if point["label"] in occluded:
            result.append({**common, "from_name": configs.VISIBILITY, "type": "choices",
                           "value": {**value, "choices": ["occluded"]}})
    return result


def studio_task(kind: JobKind, job: str, index: int, line: dict[str, Any]) -> dict[str, Any]:
    """One Label Studio task (data and prediction) for one job input line."""
    task_input, notes = build_task_input(line)
    for note in notes:
        log.info("label studio: %s: %s", line.get(TASK_ID_KEY), note)
    if kind == "head-boxes":
        title = "Box every head in this image"
        result = _head_prediction(task_input)
    else:
        title = (f"Person {task_input['personNumber']} of {task_input['personCount']}: place the body points "
                 "of the outlined person")
        result = _keypoint_prediction(task_input)
    size = task_input.get("imageSize") or {}
    data = {"image": task_input["taskObject"], "title": title, "reason_text": task_input["reasonText"],
            # the item, without its scheme: Label Studio rewrites every s3:// URI in task data into a link
            "alp_job": job, "alp_index": index, "alp_item": str(line.get(TASK_ID_KEY, "")).removeprefix("s3://"),
            "image_width": size.get("width"), "image_height": size.get("height")}
    task: dict[str, Any] = {"data": data}
    if result:
        pre = line.get(PREANNOTATION_KEY) or {}
        model = pre.get("bundle_id") if isinstance(pre, dict) else None
        if model:
            data["alp_model"] = str(model)
        task["predictions"] = [{"model_version": PREDICTION_MODEL_VERSION, "result": result}]
    return task


# --- Label Studio annotation -> the Ground Truth worker answer ---------------------------------------------

def _size_of(result: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any] | None:
    for region in result:
        if "original_width" in region and "original_height" in region:
            return {"width": region["original_width"], "height": region["original_height"]}
    if data.get("image_width") and data.get("image_height"):
        return {"width": data["image_width"], "height": data["image_height"]}
    return None


def _pixels(value: dict[str, Any], key: str, whole: Any) -> Any:
    """``value[key]`` (percent) in pixels; a missing or non-numeric field passes through for the parser to refuse."""
    raw = value.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not isinstance(whole, int | float):
        return raw
    return round(raw * whole / 100.0, 2)


def head_answer(result: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """The head-box form answer (``{"heads": {"boundingBoxes": [...], "inputImageProperties": ...}}``)."""
    size = _size_of(result, data)
    w, h = (size or {}).get("width"), (size or {}).get("height")
    boxes = []
    for region in result:
        if region.get("from_name") != configs.HEADS:
            continue
        value = region.get("value") or {}
        labels = value.get("rectanglelabels") or [HEAD_LABEL]
        boxes.append({"label": labels[0], "left": _pixels(value, "x", w), "top": _pixels(value, "y", h),
                      "width": _pixels(value, "width", w), "height": _pixels(value, "height", h)})
    element: dict[str, Any] = {"boundingBoxes": boxes}
    if size is not None:
        element["inputImageProperties"] = size
    return {HEAD_ELEMENT: element}


def keypoint_answer(result: list[dict[str, Any]], data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The keypoint form answer: the placed points plus one visibility per schema point. A placed point is
    visible unless its region's choice says otherwise; a point not placed, or set to outside, is outside."""
    size = _size_of(result, data)
    w, h = (size or {}).get("width"), (size or {}).get("height")
    choice_of = {region.get("id"): (region.get("value") or {}).get("choices") for region in result
                 if region.get("from_name") == configs.VISIBILITY}
    points = []
    visibility: dict[str, str] = {}
    for region in result:
        if region.get("from_name") != configs.KEYPOINTS:
            continue
        value = region.get("value") or {}
        labels = value.get("keypointlabels") or [None]
        chosen = choice_of.get(region.get("id")) or ["visible"]
        name = labels[0]
        if isinstance(name, str) and chosen[0] == "outside":
            visibility[name] = "outside"
            continue
        points.append({"label": name, "x": _pixels(value, "x", w), "y": _pixels(value, "y", h)})
        if isinstance(name, str):
            visibility[name] = str(chosen[0])
    answer: dict[str, Any] = {KEYPOINT_ELEMENT: {"keypoints": points}}
    if size is not None:
        answer[KEYPOINT_ELEMENT]["inputImageProperties"] = size
    for name in names:
        answer[VISIBILITY_PREFIX + name] = visibility.get(name, "outside")
    return answer


# --- the backend -------------------------------------------------------------------------------------------

class LabelStudioBackend(LabelingBackend):
    name = "label-studio"

    def __init__(self, settings: Settings, *, connection: StudioConnection | None = None,
                 clock: Callable[[], float] = time.time, client_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self._connection = connection
        self._clock = clock
        self._client_options = client_options or {}
        self._client: StudioClient | None = None
        self._folders: dict[str, str] = {}
        self._projects: dict[str, int] = {}
        self._storages: set[tuple[int, str]] = set()
        self._prefilling: set[int] = set()

    @property
    def connection(self) -> StudioConnection:
        if self._connection is None:
            self._connection = studio_connection(self.settings)
        return self._connection

    @property
    def client(self) -> StudioClient:
        if self._client is None:
            self._client = self.connection.client(**self._client_options)
        return self._client

    def template_uri(self, kind: JobKind) -> str:
        return str(configs.CONFIG_DIR / configs.CONFIG_FILES[kind])

    # --- projects and image storage ----------------------------------------------------------------------
    def project_id(self, kind: JobKind) -> int:
        """The kind's project: the one studio.json names, else the one with its title, else a new one; its
        overlap follows ``labeling.workers_per_object``."""
        key = configs.PROJECT_KEYS[kind]
        if key in self._projects:
            return self._projects[key]
        want = self.settings.labeling.workers_per_object
        project_id = self.connection.projects.get(key)
        if project_id is None:
            title = configs.project_title(self.settings.storage.resource_prefix, kind)
            found = [p for p in self.client.projects() if p.title == title]
            project = found[0] if found else self.client.create_project(
                title, configs.label_config(kind, self.settings.schema_), maximum_annotations=want)
            project_id = project.id
        project = self.client.project(project_id)
        if project.maximum_annotations != want:
            self.client.update_project(project_id, maximum_annotations=want, overlap_cohort_percentage=100)
        self._projects[key] = project_id
        return project_id

    def ensure_prefill(self, project_id: int) -> None:
        """The project prefills its tasks with their predictions (``show_collab_predictions``, "use predictions to
        prelabel tasks") of :data:`PREDICTION_MODEL_VERSION`. Called after an import: Label Studio accepts a
        model_version only once predictions of it exist (a new project takes it from its first import)."""
        if project_id in self._prefilling:
            return
        body = self.client.request("GET", f"/api/projects/{project_id}/")
        if body.get("model_version") != PREDICTION_MODEL_VERSION or body.get("show_collab_predictions") is not True:
            self.client.update_project(project_id, show_collab_predictions=True, model_version=PREDICTION_MODEL_VERSION)
        self._prefilling.add(project_id)

    def ensure_image_storage(self, project_id: int, source_ref: str) -> None:
        """An S3 storage on the project for the image's bucket, so Label Studio presigns its URLs: over the
        uploads' prefix, or over the pinned copies' prefix for an image of a dataset version (a gold item)."""
        if not source_ref.startswith("s3://"):
            return
        bucket, _, key = source_ref[5:].partition("/")
        images = self.settings.storage.images_prefix
        prefix = images if key.startswith(images) else self.settings.storage.unlabeled_prefix
        if (project_id, bucket) in self._storages:
            return
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # Keys only for an embedded endpoint (fake credentials); in the cloud Label Studio signs with its role.
        key_id = os.environ.get("AWS_ACCESS_KEY_ID") if endpoint else None
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY") if endpoint else None
        found = [s for s in self.client.s3_storages(project_id) if s.get("bucket") == bucket]
        if not found:
            self.client.add_s3_storage(project_id, bucket=bucket, prefix=prefix,
                                       region=self.settings.region, endpoint=endpoint, access_key_id=key_id,
                                       secret_access_key=secret)
        elif (found[0].get("s3_endpoint") or None) != endpoint:
            # an embedded AWS listens on a new port each run: the storage follows it
            self.client.update_s3_storage(int(found[0]["id"]), endpoint=endpoint, access_key_id=key_id,
                                          secret_access_key=secret)
        self._storages.add((project_id, bucket))

    # --- jobs --------------------------------------------------------------------------------------------
    def _record(self, folder: str) -> StudioJobRecord | None:
        uri = folder + RECORD_FILE
        return StudioJobRecord.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None

    def create_job(self, spec: JobSpec) -> JobStatus:
        self._folders[spec.name] = spec.folder
        if self._record(spec.folder) is not None:
            return self.describe_job(spec.name)
        project_id = self.project_id(spec.kind)
        lines = read_manifest(spec.input_manifest_uri)
        # A crash between the import and the record leaves tasks behind: adopt them instead of importing twice.
        adopted = {int(t.data["alp_index"]): t.id for t in self.client.tasks(project_id)
                   if t.data.get("alp_job") == spec.name and isinstance(t.data.get("alp_index"), int)}
        todo = [(i, line) for i, line in enumerate(lines) if i not in adopted]
        # one storage per bucket: a job's own images are uploads, its gold items pinned copies of a dataset
        first_of_bucket = {str(line.data.get("source-ref", ""))[5:].partition("/")[0]: line for _, line in todo}
        for line in first_of_bucket.values():
            self.ensure_image_storage(project_id, str(line.data.get("source-ref", "")))
        tasks = [studio_task(spec.kind, spec.name, i, line.data) for i, line in todo]
        ids = self.client.import_tasks(project_id, tasks) if tasks else []
        if any("predictions" in task for task in tasks):
            self.ensure_prefill(project_id)
        record = StudioJobRecord(name=spec.name, kind=spec.kind, project=project_id, url=self.connection.url,
                                 created_at=self._clock(),
                                 tasks={**adopted, **{i: task_id for (i, _), task_id in zip(todo, ids, strict=True)}})
        storage.write_text(spec.folder + RECORD_FILE, record.model_dump_json(indent=2),
                           content_type="application/json")
        log.info("label studio: job %s: %d tasks in project %d at %s", spec.name, len(record.tasks), project_id,
                 self.connection.url)
        return self.describe_job(spec.name)

    def job_status(self, name: str, folder: str) -> JobStatus | None:
        """The status of the job ``name`` whose files are in ``folder`` (a process that did not create it)."""
        self._folders[name] = folder
        return self.find_job(name)

    def find_job(self, name: str) -> JobStatus | None:
        folder = self._folders.get(name)
        if folder is None:
            return None
        if storage.exists(folder + STATUS_FILE):  # finished once: the outcome never changes afterwards
            return JobStatus.model_validate_json(storage.read_text(folder + STATUS_FILE))
        record = self._record(folder)
        if record is None:
            return None
        tasks = {t.id: t for t in self.client.tasks(record.project) if t.data.get("alp_job") == name}
        need = self.settings.labeling.workers_per_object
        done = sum(1 for task_id in record.tasks.values() if task_id not in tasks or
                   len(_submitted(tasks[task_id])) >= need)
        expired = self._clock() - record.created_at >= self.settings.labeling.task_availability_seconds
        if done < len(record.tasks) and not expired:
            return JobStatus(name=name, state="InProgress", total=len(record.tasks), labeled=done, failed=0)
        return self._finish(name, folder, record, tasks, expired)

    def _finish(self, name: str, folder: str, record: StudioJobRecord, tasks: dict[int, StudioTask],
                expired: bool) -> JobStatus:
        """The job's output, once: worker answers -> consolidation -> output manifest -> final status."""
        spec_kind: JobKind = record.kind
        input_uri = folder + "input.manifest"
        lines = read_manifest(input_uri)
        names = list(self.settings.schema_.names)
        payload: list[dict[str, Any]] = []
        failed: dict[int, str] = {}
        availability = self.settings.labeling.task_availability_seconds
        for index, task_id in sorted(record.tasks.items()):
            task = tasks.get(task_id)
            if task is None:
                failed[index] = "task deleted in Label Studio before it was labeled"
                continue
            annotations = _submitted(task)
            if not annotations:
                failed[index] = (f"not labeled within labeling.task_availability_seconds ({availability} s)"
                                 if expired else "no annotation")
                continue
            answers = []
            for annotation in annotations:
                content = (head_answer(annotation.result, task.data) if spec_kind == "head-boxes"
                           else keypoint_answer(annotation.result, task.data, names))
                if annotation.lead_time:
                    content[ELAPSED_FIELD] = f"{annotation.lead_time:.1f}"
                answers.append({"workerId": annotation.annotator_id,
                                "annotationData": {"content": json.dumps(content, sort_keys=True)}})
            payload.append({"datasetObjectId": str(index),
                            "dataObject": {"s3Uri": lines[index].data.get("source-ref")}, "annotations": answers})
        spec = _spec_for(name, spec_kind, folder, self.settings)
        payload_uri = folder + PAYLOAD_PATH
        storage.write_text(payload_uri, json.dumps(payload, sort_keys=True), content_type="application/json")
        job_arn = f"arn:aws:sagemaker:{self.settings.region}:000000000000:labeling-job/{name}"
        consolidated = {o.dataset_object_id: o.consolidated for o in (
            ConsolidatedObject.parse(item, spec.label_attribute)
            for item in post_annotation(consolidation_event(spec, job_arn, payload_uri, "label-studio")))}
        out = output_lines(spec, lines, consolidated, failed)
        write_manifest(folder + OUTPUT_MANIFEST, out)
        status = JobStatus(name=name, state="Completed", output_manifest_uri=folder + OUTPUT_MANIFEST,
                           total=len(lines), labeled=sum(1 for line in out if spec.label_attribute in line.data),
                           failed=len(failed))
        storage.write_text(folder + STATUS_FILE, status.model_dump_json(indent=2), content_type="application/json")
        return status


def _submitted(task: StudioTask) -> list[Any]:
    return [a for a in task.annotations if not a.was_cancelled]


def _spec_for(name: str, kind: JobKind, folder: str, settings: Settings) -> JobSpec:
    attr = settings.labeling.head_label_attribute if kind == "head-boxes" else settings.labeling.keypoint_label_attribute
    output_path = folder.rstrip("/").rsplit("/", 1)[0] + "/"
    return JobSpec(name=name, kind=kind, label_attribute=attr, input_manifest_uri=folder + "input.manifest",
                   output_path=output_path, label_category_uri=folder + "categories.json", template_uri="",
                   title="", description="")


# --- a Label Studio of this machine, ready for the pipeline ---------------------------------------------------

def studio_up(run_dir: Path, settings: Settings, *, port: int, timeout_seconds: float = 300.0,
              say: Callable[[str], None] = print) -> StudioConnection:
    """Start the run folder's Label Studio, create (or find) both projects and write studio.json."""
    from alp.labeling.contracts import JOB_KINDS
    from alp.studio.server import STUDIO_FILE, start_server

    connection = start_server(run_dir, port=port, version=settings.labeling.studio.version,
                              timeout_seconds=timeout_seconds, say=say)
    backend = LabelStudioBackend(settings, connection=connection)
    connection.projects = {configs.PROJECT_KEYS[kind]: backend.project_id(kind) for kind in JOB_KINDS}
    connection.write(run_dir / STUDIO_FILE)
    return connection
