"""Batches and Label Studio calls shared by the tests against a real Label Studio (API and browser).

Images and batch files live in the moto server of the ``studio_aws`` fixture (tests/studio_fixtures.py), in
the buckets named here; Label Studio presigns the images from it, so a browser can load them too.
"""

from __future__ import annotations

from typing import Any

from labeling_builders import human_line, truth_line
from studio_fixtures import jpeg_bytes

from alp import aws
from alp.manifest import OBJECT_KEY, PREANNOTATION_KEY, ManifestLine, ScoredBox, write_manifest
from alp.settings import Settings
from alp.studio.client import StudioClient, StudioTask

DATA = "alp-test-data"
UNLABELED = "alp-test-unlabeled"
FALSE_BOX = ScoredBox(left=560.0, top=400.0, width=40.0, height=40.0, score=0.41)


def studio_settings(prefix: str, **overrides: Any) -> Settings:
    """The label-studio backend, one annotation per task, no gold items; projects titled by ``prefix``."""
    return Settings().with_overrides({
        "storage.resource_prefix": prefix, "labeling.backend": "label-studio", "labeling.workers_per_object": 1,
        "labeling.gold_items_per_job": 0, **overrides})


def studio_batch(name: str, settings: Settings, *, images: int, persons: int = 2,
                 false_box_on: int | None = None) -> tuple[str, list[ManifestLine]]:
    """A batch whose human.jsonl holds ``images`` images with the model's proposals (the model misses one person
    per image, and proposes a false head box on image ``false_box_on``); the JPEGs uploaded."""
    batch_dir = f"s3://{DATA}/batches/{name}/"
    lines, truths = [], []
    for i in range(images):
        ref = f"s3://{UNLABELED}/incoming/{name}-{i}.jpg"
        aws.client("s3").put_object(Bucket=UNLABELED, Key=f"incoming/{name}-{i}.jpg", Body=jpeg_bytes())
        truth = truth_line(ref, settings, persons=persons, seed=i)
        truths.append(truth)
        line = human_line(ref, truth, settings, seed=i)
        if i == false_box_on:
            pre = line.preannotation()
            assert pre is not None
            line = line.with_model(PREANNOTATION_KEY, pre.model_copy(update={"boxes": [*pre.boxes, FALSE_BOX]}))
        lines.append(line)
    write_manifest(batch_dir + "inference/human.jsonl", lines)
    write_manifest(batch_dir + "manifest.jsonl", [ManifestLine({k: v for k, v in line.data.items()
                                                                if k == "source-ref" or k == OBJECT_KEY})
                                                   for line in lines])
    return batch_dir, truths


def job_tasks(client: StudioClient, project: int, job: str) -> list[StudioTask]:
    """The job's tasks, by item (the job itself orders them by a hash)."""
    return sorted((t for t in client.tasks(project) if t.data.get("alp_job") == job), key=lambda t: t.data["alp_item"])


def prediction_of(client: StudioClient, task: StudioTask) -> list[dict[str, Any]]:
    """The regions of the task's (first) prediction: the model's proposal."""
    body = client.request("GET", f"/api/tasks/{task.id}/", params={"fields": "all"})
    predictions = body.get("predictions") or []
    return [dict(r) for r in predictions[0]["result"]] if predictions else []


def submit(client: StudioClient, task: StudioTask, result: list[dict[str, Any]]) -> None:
    """What Label Studio's editor posts when the annotator presses Submit."""
    client.create_annotation(task.id, [r for r in result if not r.get("readonly")], lead_time=14.0)
