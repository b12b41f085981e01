"""Where a local project keeps things, and what it remembers between starts.

The layout under ``<project>``:

- ``unlabeled/<storage.unlabeled_prefix>``: the imported frames (what a camera fleet uploads to the unlabeled
  bucket); ``imports/``: one report per import (every file's outcome);
- ``aws/``: the embedded AWS's buckets and model registry, copied after every pipeline step (the deployed
  stack's bucket layout: ``aws/s3/<bucket>/objects/<key>``), from which the next start restores them;
- ``studio/``: the project's Label Studio (its database, ``studio.json`` with the URL and the token);
- ``project.json`` (:class:`LocalConfig`, fixed when the project is created), ``settings.json`` (what every step
  reads), ``state.json`` (:class:`LocalState`, the rounds; rewritten atomically), ``runner.json`` and
  ``runner.log`` (the background runner), ``logs/`` (each round's step output), ``models/`` (the zero-shot bundle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alp.schema import SchemaName
from alp.settings import Settings

DEFAULT_PROJECT_DIR = Path("alp-project")
STATE_VERSION = 1


@dataclass(frozen=True)
class ProjectPaths:
    root: Path
    unlabeled_prefix: str

    @classmethod
    def of(cls, root: Path, settings: Settings) -> ProjectPaths:
        return cls(root=root.resolve(), unlabeled_prefix=settings.storage.unlabeled_prefix)

    @property
    def incoming(self) -> Path:
        """Imported frames: the unlabeled bucket's upload prefix."""
        return self.root / "unlabeled" / self.unlabeled_prefix

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def imports(self) -> Path:
        return self.root / "imports"

    @property
    def mirror(self) -> Path:
        return self.root / "aws"

    @property
    def studio(self) -> Path:
        return self.root / "studio"

    @property
    def config_file(self) -> Path:
        return self.root / "project.json"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def runner_file(self) -> Path:
        return self.root / "runner.json"

    @property
    def runner_log(self) -> Path:
        return self.root / "runner.log"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def work(self) -> Path:
        """Caches, temporary files and the tools' homes of the runner (ultralytics, matplotlib, onnxruntime)."""
        return self.root / "work"


class LocalConfig(BaseModel):
    """What shapes a project, fixed at its creation (``project.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keypoint_schema: SchemaName = "incabin17"
    first_round_images: int = Field(20, ge=1, description="round 0: frames people label from the zero-shot proposals")
    round_images: int = Field(50, ge=1, description="frames per later round")
    studio_port: int = Field(8080, ge=1, le=65535)
    # On a laptop's CPU: 320 px and 20 epochs train a round of a few dozen frames in minutes; the zero-shot model
    # reads frames at 640, the size its COCO training used, where people far from the camera are still found.
    train_imgsz: int = Field(320, ge=32, le=2048, multiple_of=32)
    epochs: int = Field(20, ge=1, le=1000)
    zero_shot_imgsz: int = Field(640, ge=32, le=2048, multiple_of=32)


Phase = Literal["labeling", "training", "done"]


class LocalRound(BaseModel):
    """One round: its frames went up as one batch; people label what the model doubts; the dataset version trains."""

    model_config = ConfigDict(extra="forbid")

    round: int
    frames: list[str]
    manifest_uri: str
    phase: Phase = "labeling"
    bundle: str = Field("", description="the bundle that proposed this round's labels (zero-shot or a champion)")
    routes: dict[str, int] = Field(default_factory=dict)
    dataset_version: str | None = None
    candidate_bundle_id: str | None = None
    approved: bool | None = None
    gate: dict[str, float] = Field(default_factory=dict, description="the candidate's scores on the test split")
    seconds: dict[str, float] = Field(default_factory=dict, description="per pipeline step")

    @property
    def batch_dir(self) -> str:
        return self.manifest_uri.rsplit("/", 1)[0] + "/"


class LocalState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_version: int = STATE_VERSION
    rounds: list[LocalRound] = Field(default_factory=list)
    seeded: list[str] = Field(default_factory=list, description="frames labeled by the --labels file (staged in "
                                                                "labels/; a round trains on them once written)")

    @property
    def batched(self) -> set[str]:
        """Frames (keys under the incoming folder) a round took: in a batch, or labeled by the --labels file."""
        return {frame for r in self.rounds for frame in r.frames} | set(self.seeded)


class ProjectError(ValueError):
    """The folder is not a project this alp can open as asked."""


def read_config(paths: ProjectPaths) -> LocalConfig | None:
    return LocalConfig.model_validate_json(paths.config_file.read_text()) if paths.config_file.is_file() else None


def read_state(paths: ProjectPaths) -> LocalState:
    if not paths.state_file.is_file():
        return LocalState()
    try:
        state = LocalState.model_validate_json(paths.state_file.read_text())
    except ValueError as exc:
        raise ProjectError(f"{paths.state_file} is unreadable ({str(exc).splitlines()[0]})") from None
    if state.state_version != STATE_VERSION:
        raise ProjectError(f"{paths.root} was made by another alp (state version {state.state_version}, this one "
                           f"reads {STATE_VERSION})")
    return state


def write_json_atomically(path: Path, text: str) -> None:
    """The file is whole or as it was: a kill mid-write leaves the old one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_state(paths: ProjectPaths, state: LocalState) -> None:
    write_json_atomically(paths.state_file, json.dumps(state.model_dump(mode="json"), indent=1))
