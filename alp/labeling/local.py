"""The ``local`` backend: a simulated workforce for the embedded mode, the tests and the benchmarks.

It walks the same path a Ground Truth job does, with the real parts wherever one exists: for each data
object it calls the pre-annotation Lambda's logic (as that function, through :mod:`alp.principals`), renders
the real template, answers in the exact shape the rendered form submits (field names read from the HTML),
writes the consolidation payload where Ground Truth writes it, calls the post-annotation Lambda's logic the
same way and writes the output manifest where Ground Truth would.
Workers answer from the synthetic truth (``settings.labeling.local_truth_uri``, looked up by the image file
name) through a configurable :class:`NoiseModel`; a share of them is careless. It can also play a job that
fails, is stopped half way or ends with part of its objects failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alp import principals, storage
from alp.geometry import Box, match_boxes
from alp.labeling.backend import OUTPUT_MANIFEST, JobSpec, JobStatus, LabelingBackend
from alp.labeling.contracts import (
    ELAPSED_FIELD,
    HEAD_ELEMENT,
    HEAD_LABEL,
    KEYPOINT_ELEMENT,
    PERSON_KEY,
    VISIBILITY_PREFIX,
    ConsolidatedLabel,
    ConsolidatedObject,
    PersonTask,
)
from alp.labeling.job_output import PAYLOAD_PATH, consolidation_event, output_lines
from alp.labeling.post_annotation import post_annotation
from alp.labeling.pre_annotation import pre_annotation
from alp.labeling.render import FormSpec, parse_form, render_task
from alp.manifest import (
    BoundingBoxLabel,
    KeypointLabel,
    ManifestLine,
    PersonKeypoints,
    read_manifest,
    write_manifest,
)
from alp.resources import ResourceNames
from alp.schema import VISIBILITY_NAMES
from alp.settings import Settings

STATUS_FILE = "alp-local-status.json"
LOCAL_ACCOUNT = "000000000000"


class NoiseModel(BaseModel):
    """How simulated workers deviate from the truth. Careless workers multiply every error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_jitter: float = Field(0.04, ge=0.0, description="std of each box edge, as a share of the box side")
    missed_box_rate: float = Field(0.03, ge=0.0, le=1.0)
    extra_box_rate: float = Field(0.02, ge=0.0, le=1.0, description="chance of one spurious box per image")
    keypoint_jitter: float = Field(0.08, ge=0.0, description="std of each coordinate, share of the head size")
    missed_point_rate: float = Field(0.03, ge=0.0, le=1.0, description="a labeled point marked outside")
    wrong_visibility_rate: float = Field(0.05, ge=0.0, le=1.0)
    careless_jitter_factor: float = Field(8.0, ge=1.0)
    careless_rate_factor: float = Field(6.0, ge=1.0)
    malformed_answer_rate: float = Field(0.0, ge=0.0, le=1.0, description="answers broken on purpose")
    seconds_per_item: float = Field(25.0, gt=0.0)


class LocalJobSimulation(BaseModel):
    """A simulated job: workers, noise and how the job ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noise: NoiseModel = NoiseModel()
    workers: int | None = Field(None, ge=1, le=9, description="default settings.labeling.local_workers")
    careless_share: float | None = Field(None, ge=0.0, le=1.0, description="default local_careless_share")
    outcome: Literal["completed", "failed", "stopped", "partial"] = "completed"
    finished_share: float = Field(0.5, ge=0.0, le=1.0, description="stopped / partial: share of objects done")
    failure_reason: str = "simulated: the labeling job failed"
    seed: str = "alp-local-workforce"


class SimulatedWorker(BaseModel):
    worker_id: str
    careless: bool = False


def workforce(count: int, careless_share: float) -> list[SimulatedWorker]:
    """``count`` workers; the last ``round(share * count)`` of them are careless."""
    careless = round(careless_share * count)
    return [SimulatedWorker(worker_id=f"local-worker-{i + 1:02d}", careless=i >= count - careless)
            for i in range(count)]


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]
    return random.Random(int(seed, 16))


class LocalWorkforceBackend(LabelingBackend):
    name = "local"

    def __init__(self, settings: Settings, *, simulation: LocalJobSimulation | None = None,
                 truth: list[ManifestLine] | None = None) -> None:
        self.settings = settings
        self.simulation = simulation or LocalJobSimulation()
        self._truth_lines = truth
        self._truth: dict[str, ManifestLine] | None = None
        self._folders: dict[str, str] = {}

    # --- truth ------------------------------------------------------------------------------------------
    def truth_lines(self) -> list[ManifestLine]:
        if self._truth_lines is None:
            uri = self.settings.labeling.local_truth_uri
            if not uri:
                raise ValueError("the local labeling backend needs settings.labeling.local_truth_uri "
                                 "(the synthetic generator's truth manifest)")
            self._truth_lines = read_manifest(uri)
        return self._truth_lines

    def truth_for(self, source_ref: str) -> ManifestLine | None:
        if self._truth is None:
            self._truth = {storage.basename(line.source_ref): line for line in self.truth_lines()
                           if isinstance(line.data.get("source-ref"), str)}
        return self._truth.get(storage.basename(source_ref))

    def gold_candidates(self) -> list[ManifestLine]:
        """Lines with known labels that gold items can be drawn from: the truth, here."""
        return list(self.truth_lines())

    # --- jobs -------------------------------------------------------------------------------------------
    def find_job(self, name: str) -> JobStatus | None:
        folder = self._folders.get(name)
        if folder is None or not storage.exists(folder + STATUS_FILE):
            return None
        return JobStatus.model_validate_json(storage.read_text(folder + STATUS_FILE))

    def create_job(self, spec: JobSpec) -> JobStatus:
        self._folders[spec.name] = spec.folder
        existing = self.find_job(spec.name)
        if existing is not None:
            return existing
        status = self._run(spec)
        storage.write_text(spec.folder + STATUS_FILE, status.model_dump_json(indent=2),
                           content_type="application/json")
        return status

    def _run(self, spec: JobSpec) -> JobStatus:
        sim = self.simulation
        lines = read_manifest(spec.input_manifest_uri)
        total = len(lines)
        if sim.outcome == "failed":
            return JobStatus(name=spec.name, state="Failed", failure_reason=sim.failure_reason, total=total,
                             labeled=0, failed=total)
        finished = total if sim.outcome == "completed" else math.floor(sim.finished_share * total)
        payload, failed = self._work(spec, lines, finished)
        consolidated = self._consolidate(spec, payload)
        out_lines = output_lines(spec, lines, consolidated, failed)
        output_uri = spec.folder + OUTPUT_MANIFEST
        write_manifest(output_uri, out_lines)
        labeled = sum(1 for line in out_lines if spec.label_attribute in line.data)
        return JobStatus(
            name=spec.name, state="Stopped" if sim.outcome == "stopped" else "Completed",
            failure_reason="simulated: the job was stopped" if sim.outcome == "stopped" else None,
            output_manifest_uri=output_uri, total=total, labeled=labeled, failed=len(failed),
        )

    def _names(self) -> ResourceNames:
        return ResourceNames.from_settings(self.settings, account=LOCAL_ACCOUNT)

    def _job_arn(self, spec: JobSpec) -> str:
        return f"arn:aws:sagemaker:{self.settings.region}:{LOCAL_ACCOUNT}:labeling-job/{spec.name}"

    def _work(self, spec: JobSpec, lines: list[ManifestLine], finished: int
              ) -> tuple[list[dict[str, Any]], dict[int, str]]:
        """The workers' side of the job: each of the first ``finished`` objects through the pre-annotation
        function, the rendered task and every worker's answer. Returns the consolidation payload and the
        objects that failed, with why."""
        sim = self.simulation
        names = self._names()
        workers = workforce(sim.workers or self.settings.labeling.local_workers,
                            self.settings.labeling.local_careless_share if sim.careless_share is None
                            else sim.careless_share)
        payload: list[dict[str, Any]] = []
        failed: dict[int, str] = {}
        for i, line in enumerate(lines):
            if i >= finished:
                if sim.outcome == "partial":
                    failed[i] = "simulated: no worker finished this object"
                continue
            event = {"version": "2018-10-16", "labelingJobArn": self._job_arn(spec), "dataObject": line.data}
            try:
                with principals.acting_as_role(names.sagemaker_role):  # Ground Truth invokes with the job's role
                    response = principals.invoke_function(names.pre_annotation_function, pre_annotation, event)
            except ValueError as exc:
                failed[i] = f"pre-annotation failed: {exc}"
                continue
            form = parse_form(render_task(spec.kind, response["taskInput"]))
            annotations = []
            for worker in workers:
                rng = _rng(sim.seed, spec.name, i, worker.worker_id)
                content = self._answer(spec, line, form, worker, rng)
                if content is not None:
                    annotations.append({"workerId": worker.worker_id, "annotationData": {"content": content}})
            payload.append({"datasetObjectId": str(i), "dataObject": {"s3Uri": line.data.get("source-ref")},
                            "annotations": annotations})
        return payload, failed

    def _consolidate(self, spec: JobSpec, payload: list[dict[str, Any]]) -> dict[str, ConsolidatedLabel]:
        """Ground Truth's side: the payload written where it writes it, the post-annotation function called
        with the job's role; the consolidated label of each object by its id."""
        names = self._names()
        payload_uri = spec.folder + PAYLOAD_PATH
        with principals.acting_as_role(names.sagemaker_role):  # Ground Truth writes the workers' answers
            storage.write_text(payload_uri, json.dumps(payload, sort_keys=True), content_type="application/json")
        event = consolidation_event(spec, self._job_arn(spec), payload_uri,
                                    f"arn:aws:iam::{LOCAL_ACCOUNT}:role/local-labeling")
        with principals.acting_as_role(names.sagemaker_role):
            response = principals.invoke_function(names.post_annotation_function, post_annotation, event)
        objects = [ConsolidatedObject.parse(item, spec.label_attribute) for item in response]
        return {o.dataset_object_id: o.consolidated for o in objects}

    # --- one simulated worker's answer -----------------------------------------------------------------
    def _answer(self, spec: JobSpec, line: ManifestLine, form: FormSpec, worker: SimulatedWorker,
                rng: random.Random) -> str | None:
        truth = self.truth_for(str(line.data.get("source-ref", "")))
        if truth is None:
            return None  # nobody can answer an image the simulation has no truth for
        noise = self.simulation.noise
        if rng.random() < noise.malformed_answer_rate:
            return _malformed(rng)
        labeling = self.settings.labeling
        if spec.kind == "head-boxes":
            found = truth.boxes(labeling.head_label_attribute)
            if found is None:
                return None
            answer = simulate_head_answer(form, found[0], noise, worker.careless, rng)
        else:
            found_boxes = truth.boxes(labeling.head_label_attribute)
            found_kp = truth.keypoints(labeling.keypoint_label_attribute)
            if found_boxes is None or found_kp is None:
                return None
            person = PersonTask.model_validate(line.data[PERSON_KEY])
            answer = simulate_keypoint_answer(form, person, found_boxes[0], found_kp[0], noise, worker.careless, rng)
        seconds = rng.expovariate(1.0 / noise.seconds_per_item) * (0.3 if worker.careless else 1.0)
        answer[ELAPSED_FIELD] = f"{max(seconds, 1.0):.1f}"
        return json.dumps(answer, sort_keys=True)


def _scaled(rate: float, careless: bool, factor: float) -> float:
    return min(0.9, rate * factor) if careless else rate


def simulate_head_answer(form: FormSpec, truth: BoundingBoxLabel, noise: NoiseModel, careless: bool,
                         rng: random.Random) -> dict[str, Any]:
    """The head-box form as a worker submits it: the truth's boxes, jittered, some missed, maybe one extra."""
    element = form.element("crowd-bounding-box")
    labels = json.loads(element["labels"])
    if HEAD_LABEL not in labels:
        raise ValueError(f"the rendered head-box task offers labels {labels}, not {HEAD_LABEL!r}")
    w, h = truth.size.width, truth.size.height
    jitter = noise.box_jitter * (noise.careless_jitter_factor if careless else 1.0)
    boxes = []
    for ann in truth.annotations:
        if rng.random() < _scaled(noise.missed_box_rate, careless, noise.careless_rate_factor):
            continue
        left = ann.left + rng.gauss(0, jitter * ann.width)
        right = ann.left + ann.width + rng.gauss(0, jitter * ann.width)
        top = ann.top + rng.gauss(0, jitter * ann.height)
        bottom = ann.top + ann.height + rng.gauss(0, jitter * ann.height)
        boxes.append(_clipped_box(left, top, right, bottom, w, h))
    if rng.random() < _scaled(noise.extra_box_rate, careless, noise.careless_rate_factor):
        side = max(8.0, min(w, h) * rng.uniform(0.05, 0.15))
        x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
        boxes.append(_clipped_box(x, y, x + side, y + side, w, h))
    return {
        element["name"]: {
            "boundingBoxes": [{"label": HEAD_LABEL, **b} for b in boxes if b["width"] > 0 and b["height"] > 0],
            "inputImageProperties": {"width": w, "height": h},
        }
    }


def _clipped_box(left: float, top: float, right: float, bottom: float, w: int, h: int) -> dict[str, float]:
    left, right = sorted((min(max(left, 0.0), w), min(max(right, 0.0), w)))
    top, bottom = sorted((min(max(top, 0.0), h), min(max(bottom, 0.0), h)))
    return {"left": round(left), "top": round(top), "width": round(right) - round(left),
            "height": round(bottom) - round(top)}


def truth_person_for(task: PersonTask, truth_boxes: BoundingBoxLabel, truth_kp: KeypointLabel) -> PersonKeypoints | None:
    """The truth person whose head box best matches the task's head box (IoU >= 0.3)."""
    boxes = [Box(a.left, a.top, a.width, a.height) for a in truth_boxes.annotations]
    matches = match_boxes([Box(*task.head_box)], boxes, 0.3)
    if not matches:
        return None
    index = matches[0][1]
    for person in truth_kp.persons:
        if person.head_box_index == index:
            return person
    return None


def simulate_keypoint_answer(form: FormSpec, task: PersonTask, truth_boxes: BoundingBoxLabel,
                             truth_kp: KeypointLabel, noise: NoiseModel, careless: bool,
                             rng: random.Random) -> dict[str, Any]:
    """The keypoint form: points from the truth person (jittered, some missed) and a visibility per point."""
    element = form.element("crowd-keypoint")
    labels = json.loads(element["labels"])
    w, h = task.image_size.width, task.image_size.height
    person = truth_person_for(task, truth_boxes, truth_kp)
    truth_points = {k.name: k for k in person.keypoints} if person is not None else {}
    head = max(task.head_box[2], task.head_box[3], 1.0)
    jitter = noise.keypoint_jitter * head * (noise.careless_jitter_factor if careless else 1.0)
    answer: dict[str, Any] = {}
    placed = []
    for name in labels:
        field = VISIBILITY_PREFIX + name
        choices = form.radios.get(field)
        if not choices:
            raise ValueError(f"the rendered keypoint task has no visibility field {field!r}")
        k = truth_points.get(name)
        v = k.v if k is not None else 0
        if v > 0 and rng.random() < _scaled(noise.missed_point_rate, careless, noise.careless_rate_factor):
            v = 0
        elif rng.random() < _scaled(noise.wrong_visibility_rate, careless, noise.careless_rate_factor):
            v = rng.choice([c for c in (0, 1, 2) if c != v])
        choice = VISIBILITY_NAMES[v]
        if choice not in choices:
            raise ValueError(f"the rendered keypoint task offers {choices} for {name}, not {choice!r}")
        answer[field] = choice
        if v > 0:
            # A point the truth has outside but the worker calls in view lands near the head.
            bx, by = (k.x, k.y) if k is not None and k.v > 0 else (task.head_box[0] + task.head_box[2] / 2,
                                                                   task.head_box[1] + task.head_box[3] / 2)
            x = min(max(bx + rng.gauss(0, jitter), 0.0), float(w))
            y = min(max(by + rng.gauss(0, jitter), 0.0), float(h))
            placed.append({"label": name, "x": round(x, 1), "y": round(y, 1)})
    answer[element["name"]] = {"keypoints": placed, "inputImageProperties": {"width": w, "height": h}}
    return answer


def _malformed(rng: random.Random) -> str:
    """An answer a buggy browser, a tampered form or a script could send."""
    variants = [
        '{"broken": ',
        json.dumps({HEAD_ELEMENT: {"boundingBoxes": [{"label": "<script>alert(1)</script>", "left": 1, "top": 1,
                                                      "width": 5, "height": 5}],
                                   "inputImageProperties": {"width": 64, "height": 64}}}),
        '{"' + HEAD_ELEMENT + '": {"boundingBoxes": [{"label": "head", "left": NaN, "top": 1, "width": 5, '
        '"height": 5}], "inputImageProperties": {"width": 64, "height": 64}}}',
        json.dumps({KEYPOINT_ELEMENT: {"keypoints": "all of them", "inputImageProperties": {"width": 64}}}),
        json.dumps(["not", "an", "object"]),
    ]
    return rng.choice(variants)

