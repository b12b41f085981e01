"""What every backend writes at the end of a job, in Ground Truth's formats: the consolidation request's
event and the output manifest. One definition for the simulated workforce and Label Studio."""

from __future__ import annotations

from typing import Any

from alp.labeling.backend import JobSpec
from alp.labeling.contracts import ConsolidatedLabel
from alp.manifest import CUSTOM_TYPE, ManifestLine, utc_now_iso

PAYLOAD_PATH = "annotations/consolidated-annotation/consolidation-request/iteration-1/payload.json"


def consolidation_event(spec: JobSpec, job_arn: str, payload_uri: str, role_arn: str) -> dict[str, Any]:
    """The post-annotation Lambda's event for one consolidation request, as Ground Truth sends it."""
    return {
        "version": "2018-10-16", "labelingJobArn": job_arn, "labelCategories": None,
        "labelAttributeName": spec.label_attribute, "roleArn": role_arn, "payload": {"s3Uri": payload_uri},
        "outputConfig": spec.folder + "annotations/consolidated-annotation/output",
    }


def output_lines(spec: JobSpec, lines: list[ManifestLine], consolidated: dict[str, ConsolidatedLabel],
                 failed: dict[int, str]) -> list[ManifestLine]:
    """The output manifest as Ground Truth writes it: labeled objects with their label and metadata, failed
    ones with the failure reason only, objects nobody finished left out."""
    out_lines = []
    now = utc_now_iso()
    for i, line in enumerate(lines):
        meta: dict[str, Any] = {"type": CUSTOM_TYPE, "job-name": f"labeling-job/{spec.name}",
                                "human-annotated": "yes", "creation-date": now}
        label = consolidated.get(str(i))
        if label is not None:
            out_lines.append(line.with_fields(**{spec.label_attribute: label.to_json(),
                                                 f"{spec.label_attribute}-metadata": meta}))
        elif i in failed:
            meta.pop("human-annotated")
            meta["failure-reason"] = failed[i]
            out_lines.append(line.with_fields(**{f"{spec.label_attribute}-metadata": meta}))
    return out_lines
