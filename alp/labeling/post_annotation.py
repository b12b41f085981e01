"""The post-annotation (consolidation) Lambda's logic (``AnnotationConsolidationLambdaArn``).

In: ``version``, ``labelingJobArn``, ``labelCategories``, ``labelAttributeName``, ``roleArn``,
``payload.s3Uri`` and optionally ``outputConfig``. The payload is a JSON array of data objects, each with
every worker's ``annotationData`` (inline ``content`` or an ``s3Uri``). Out: one
:class:`~alp.labeling.contracts.ConsolidatedObject` per object.

The job context (``<job folder>/alp-job.json``, written by the label step: task kind, schema, gold items
and the gold threshold) is read from the job's output folder; a worker report is written beside it under
``alp-worker-reports/``. One bad object or answer never fails the request: it is logged and the object is
returned unlabeled, which sends it back to the queue. The payload is read with the caller's role (the
function's own in the cloud). The decisions are :func:`~alp.labeling.consolidation.consolidate_request`'s;
this module reads and writes through :mod:`alp.storage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from alp import storage
from alp.labeling.consolidation import ResolvedObject, consolidate_request
from alp.labeling.contracts import (
    JOB_CONTEXT_NAME,
    WORKER_REPORTS_DIR,
    ConsolidatedObject,
    ConsolidationInfo,
    JobContext,
    JobKind,
    PayloadObject,
    PostAnnotationEvent,
    job_folder_from_payload,
    job_name_from_arn,
)
from alp.labeling.worker_reports import WorkerReport, merge_reports

# The name the Lambda's log lines have always carried (log filters and alarms key on it).
log = logging.getLogger("alp.gt_post_annotation")
MAX_ANSWER_BYTES = 1_000_000


class PostAnnotationError(ValueError):
    """The event itself is unusable (no payload location, no job): the whole request cannot proceed."""


def post_annotation(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The consolidated annotations for one Ground Truth consolidation request, as the Lambda returns them."""
    try:
        parsed = PostAnnotationEvent.model_validate(event)
    except ValidationError as exc:
        raise PostAnnotationError(f"consolidation event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    job = job_name_from_arn(parsed.labeling_job_arn)
    payload_uri = parsed.payload.s3_uri
    raw = json.loads(storage.read_text(payload_uri))
    if not isinstance(raw, list):
        raise PostAnnotationError(f"payload {payload_uri} is not a JSON array")
    folder = job_folder_from_payload(payload_uri, job) or (
        job_folder_from_payload(parsed.output_config, job) if parsed.output_config else None
    )
    job_context = _job_context(folder, job, parsed)
    objects, broken = _resolve(raw)
    report_name = hashlib.sha256(payload_uri.encode()).hexdigest()[:20] + ".json"
    prior = _prior_report(folder, report_name)
    result = consolidate_request(objects, job_context, prior)
    for line in result.log:
        log.info(json.dumps({"job": job, "event": "consolidation", "detail": line[:500]}))
    outputs = result.outputs + [
        ConsolidatedObject.unlabeled(obj_id, parsed.label_attribute_name, ConsolidationInfo(unlabeled=True, reason=reason))
        for obj_id, reason in broken
    ]
    if folder is not None:
        storage.write_text(folder + f"{WORKER_REPORTS_DIR}/{report_name}",
                           result.report.model_dump_json(indent=2), content_type="application/json")
    else:
        log.warning(json.dumps({"job": job, "event": "no_job_folder", "payload": payload_uri}))
    return [o.to_json() for o in outputs]


def _job_context(folder: str | None, job: str, event: PostAnnotationEvent) -> JobContext:
    if folder is not None:
        uri = folder + JOB_CONTEXT_NAME
        try:
            ctx = JobContext.model_validate_json(storage.read_text(uri))
            return ctx.model_copy(update={"label_attribute": event.label_attribute_name})
        except storage.ObjectNotFound:
            log.warning(json.dumps({"job": job, "event": "no_job_context", "uri": uri}))
        except ValidationError as exc:
            log.warning(json.dumps({"job": job, "event": "bad_job_context", "uri": uri, "error": str(exc)[:300]}))
    return _default_context(job, event)


def _default_context(job: str, event: PostAnnotationEvent) -> JobContext:
    """Without a job context (a job made by other tooling): the kind from the label attribute, no gold."""
    from alp.settings import load_settings

    settings = load_settings()
    schema = settings.schema_
    kind: JobKind = (
        "keypoints" if event.label_attribute_name == settings.labeling.keypoint_label_attribute else "head-boxes"
    )
    return JobContext(
        job_name=job, kind=kind, label_attribute=event.label_attribute_name, keypoint_schema=schema.name,
        keypoint_names=list(schema.names), sigmas=list(schema.sigmas),
        gold_agreement_threshold=settings.labeling.gold_agreement_threshold,
    )


def _resolve(raw: list[Any]) -> tuple[list[ResolvedObject], list[tuple[str, str]]]:
    """Typed payload objects with every answer's text fetched; objects too broken to parse are returned
    apart (with an id when they have one) so they come back unlabeled instead of failing the job."""
    objects: list[ResolvedObject] = []
    broken: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        try:
            obj = PayloadObject.model_validate(item)
        except ValidationError as exc:
            obj_id = item.get("datasetObjectId") if isinstance(item, dict) else None
            reason = f"malformed payload object: {exc.errors()[0]['msg']}"
            log.warning(json.dumps({"event": "bad_payload_object", "index": i, "why": reason}))
            if isinstance(obj_id, str | int):
                broken.append((str(obj_id), reason))
            continue
        resolved = ResolvedObject(obj.dataset_object_id, obj.source)
        for ann in obj.annotations:
            data = ann.annotation_data
            try:
                if data.content is not None:
                    text = data.content
                elif data.s3_uri:
                    text = storage.read_text(data.s3_uri)
                else:
                    raise ValueError("annotationData has neither content nor s3Uri")
                if len(text) > MAX_ANSWER_BYTES:
                    raise ValueError("answer larger than 1 MB")
                resolved.answers.append((ann.worker_id, text))
            except (ValueError, UnicodeDecodeError, ClientError, BotoCoreError) as exc:
                resolved.fetch_errors[ann.worker_id] = f"answer unreadable: {exc}"[:200]
        objects.append(resolved)
    return objects, broken


def _prior_report(folder: str | None, current: str) -> WorkerReport | None:
    """Worker stats from this job's earlier consolidation requests (gold seen there counts too)."""
    if folder is None:
        return None
    reports = []
    for uri in storage.list_uris(folder + f"{WORKER_REPORTS_DIR}/"):
        if storage.basename(uri) == current:
            continue
        try:
            reports.append(WorkerReport.model_validate_json(storage.read_text(uri)))
        except (ValidationError, storage.StorageError) as exc:
            log.warning(json.dumps({"event": "bad_worker_report", "uri": uri, "error": str(exc)[:200]}))
    return merge_reports(reports)
