"""The demo's run folder: its layout, its configuration and ``state.json`` (what a re-run resumes from).

Everything the demo writes lives under one folder (default ``./demo-run``). ``state.json`` is rewritten
atomically after every completed round, together with the mirror of the embedded AWS state, so an
interrupted run resumes at the first round that did not complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from alp.automation import AutomationFigures

STATE_VERSION = 4  # 2: the human budget (human_share) joined the config; 3: deferred images are re-driven;
# 4: the labeling pipeline's Requeue step sends them back (the runner no longer uploads them again)


class DemoConfig(BaseModel):
    """The flags that shape a run; a resumed run must use the same ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(3, ge=1, le=50, description="rounds after the cold start")
    pool: int = Field(300, ge=8)
    test_images: int = Field(60, ge=4)
    seed_images: int = Field(40, ge=10, description="round 0: random images labeled by people (the first "
                                                    "dataset version needs some in its test split)")
    batch_images: int | None = Field(None, ge=1, description="images uploaded per round; default: pool split evenly")
    width: int = Field(256, ge=32)
    height: int = Field(192, ge=32)
    imgsz: int = Field(160, ge=32, multiple_of=32)
    # 5: on an idle 2-core machine the demo took 12.6 min with 10 epochs, 9.3 with 6 and 8.4 with 5 (plus 80 s
    # for a fresh clone's venv); its budget is 10 minutes. A later, quieter run: 6.5 min with 5 epochs and with
    # 6 alike; machines vary by a quarter, so 5 keeps the margin. ONNX export and int8 quantization add about
    # 25 s a round whatever the epochs. Each round fine-tunes the champion, so the epochs add up.
    epochs: int = Field(5, ge=1)
    batch: int = Field(16, ge=1)
    broken_per_round: int = Field(1, ge=0, le=10, description="unusable uploads per round (quarantine path)")
    seed: int = 0
    hard_share: float = Field(0.3, ge=0.0, le=1.0)
    human_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="a fixed human budget per round, as a share of the batch: the images the judgement is least "
                    "sure of go to people, the images its thresholds passed are auto-labeled, and the ones it "
                    "doubts beyond the budget wait for the next round (deferred); 0 (default) = the thresholds "
                    "alone, every doubted image to people")

    def human_budget(self) -> int | None:
        return None if self.human_share == 0 else max(1, round(self.human_share * self.round_batch_size()))

    def round_batch_size(self) -> int:
        if self.batch_images is not None:
            return self.batch_images
        return max(1, (self.pool - self.seed_images) // self.rounds)


class RoundRecord(AutomationFigures):
    """One row of the round table."""

    model_config = ConfigDict(extra="forbid")

    round: int
    images_seen: int = 0
    auto: int = 0
    human: int = 0
    audit: int = 0
    quarantine: int = 0
    deferred: int = Field(0, description="held back by a human budget; the Requeue step sends them back")
    redriven: int = Field(0, description="of images_seen: the images the previous round's Requeue step sent back")
    deferred_images: list[str] = Field(default_factory=list, description="pool names of the deferred images")
    requeued: int = Field(0, description="sent back to the queue by this round's Requeue step (deferred or left "
                                         "unlabeled): the next round's batch takes them")
    requeue_quarantined: int = Field(0, description="quarantined by the Requeue step instead (sent back "
                                                    "labeling.max_requeues times already)")
    unlabeled: int = Field(0, description="sent to people but not labeled (a failed, stopped or partial labeling "
                                          "job): not counted as labeled; the Requeue step sends them back")
    human_labels_total: int = Field(0, description="images labeled by people so far, this round included")
    audit_agreement: float | None = None
    box_map50: float | None = None
    kpt_oks_map50: float | None = None
    visibility_accuracy: float | None = None
    seconds: float = 0.0
    dataset_version: str | None = None
    bundle_id: str | None = None
    bundle_uri: str | None = None
    approved: bool | None = None
    batch_dir: str | None = None
    step_seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def routed(self) -> int:
        return self.auto + self.human + self.audit + self.quarantine + self.deferred


class DemoState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_version: int = STATE_VERSION
    config: DemoConfig
    pool_manifest: str | None = None
    test_manifest: str | None = None
    uploaded: list[str] = Field(default_factory=list, description="pool image names already uploaded")
    rounds: list[RoundRecord] = Field(default_factory=list)

    @property
    def completed_rounds(self) -> int:
        return len(self.rounds)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (other flags, unreadable state)."""


# Where each part of a run lives under its folder (the layout is described in :mod:`alp.demo`).
_LAYOUT = {
    "state_path": "state.json",
    "mirror_dir": "aws-mirror",
    "work_dir": "work",
    "config_dir": "ultralytics",  # ultralytics' config, fonts and runs
    "mpl_dir": "matplotlib",
    "metrics_log": "metrics.jsonl",
    "logs_dir": "logs",
    "report_dir": "report",
}


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run folder: ``root`` and, below it, one attribute per entry of the layout."""

    root: Path
    start_over: str = "add --fresh"  # the flag that starts over, named in errors
    state_path: Path = field(init=False)
    mirror_dir: Path = field(init=False)
    work_dir: Path = field(init=False)
    config_dir: Path = field(init=False)
    mpl_dir: Path = field(init=False)
    metrics_log: Path = field(init=False)
    logs_dir: Path = field(init=False)
    report_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, relative in _LAYOUT.items():
            object.__setattr__(self, name, self.root / relative)  # frozen: set once, here

    def prepare(self, *, fresh: bool) -> None:
        if fresh and self.root.exists():
            if self.root.is_dir() and not (self.state_path.exists() or not any(self.root.iterdir())):
                # Refuse to wipe a folder that the demo did not create (a typo in --run-dir).
                raise RunFolderError(f"{self.root} exists but has no state.json: not deleting a folder the demo "
                                     "did not create; choose another --run-dir")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def load_state(self, config: DemoConfig) -> DemoState:
        """The saved state, or a new one; a saved state made with other flags is refused."""
        if not self.state_path.is_file():
            return DemoState(config=config)
        try:
            state = DemoState.model_validate_json(self.state_path.read_text())
        except ValueError as exc:
            raise RunFolderError(f"{self.state_path} is unreadable ({exc}); {self.start_over} to start over") from None
        if state.state_version != STATE_VERSION:
            raise RunFolderError(f"{self.root} holds a run of an earlier alp (state version {state.state_version}, "
                                 f"this one writes {STATE_VERSION}); {self.start_over} to start over")
        if state.config != config:
            diff = {k: (v, getattr(config, k)) for k, v in state.config.model_dump().items()
                    if getattr(config, k) != v}
            raise RunFolderError(
                f"{self.root} holds a run made with other settings {diff} (saved, asked); "
                f"re-run with the same flags to resume, or {self.start_over} to start over"
            )
        return state

    def save_state(self, state: DemoState) -> None:
        tmp = self.state_path.with_name(f".state.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state.model_dump(mode="json"), indent=1))
        tmp.replace(self.state_path)
