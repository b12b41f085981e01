"""The Label Studio labeling configs of the two task kinds, kept beside the Ground Truth templates."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr  # nosec B406: escapes our own keypoint names; parses nothing

from alp.labeling.contracts import JobKind
from alp.schema import KeypointSchema

CONFIG_DIR = Path(__file__).resolve().parents[2] / "gt_templates" / "label-studio"
CONFIG_FILES: dict[str, str] = {"head-boxes": "heads.xml", "keypoints": "keypoints.xml"}
KEYPOINT_LABELS_MARKER = "<!-- alp:keypoint-labels -->"
PROJECT_KEYS: dict[str, str] = {"head-boxes": "heads", "keypoints": "keypoints"}  # studio.json's project names

# Control names the configs declare and the backend reads back (one place for both).
IMAGE = "image"
HEADS = "heads"
PERSON = "person"
KEYPOINTS = "keypoints"
VISIBILITY = "visibility"
PERSON_LABEL = "this person"


def label_config(kind: JobKind, schema: KeypointSchema) -> str:
    """The config of ``kind``; the keypoint config lists the schema's points as labels."""
    text = (CONFIG_DIR / CONFIG_FILES[kind]).read_text()
    if kind == "keypoints":
        if KEYPOINT_LABELS_MARKER not in text:
            raise ValueError(f"{CONFIG_DIR / CONFIG_FILES[kind]} lost its marker {KEYPOINT_LABELS_MARKER}")
        labels = "\n    ".join(f"<Label value={quoteattr(name)}/>" for name in schema.names)
        text = text.replace(KEYPOINT_LABELS_MARKER, labels)
    return text


def project_title(resource_prefix: str, kind: JobKind) -> str:
    return f"{resource_prefix}: {'head boxes' if kind == 'head-boxes' else 'person keypoints'}"
