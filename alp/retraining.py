"""When a merged dataset version retrains the models: after enough new labels from people.

Every batch used to retrain everything. With ``training.retrain_min_new_labels`` = N, the Merge step starts the
training pipeline only once the labels people made (kinds ``human``, ``audit``, ``seed``) have grown by at least
N since the last version a training run was started for; the versions in between are kept and the next start
trains on the latest, which holds them all. 0 (the default) retrains after every version, as before.
The record of starts lives under the labeling prefix (``<labeling_prefix>training-starts/<version>.json``),
which the steps that merge may write; dataset versions themselves are never modified.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from alp import storage
from alp.datasets import DatasetVersion, read_version_info
from alp.settings import Settings

# labels people made: a mixed record (some parts people's) counts as one
PEOPLE_WORK_KINDS = ("human", "audit", "seed", "mixed")
STARTS_FOLDER = "training-starts"


def people_labels(version: DatasetVersion) -> int:
    """Records of the version whose labels people made."""
    return sum(version.counts_by_source.get(kind, 0) for kind in PEOPLE_WORK_KINDS)


@dataclass(frozen=True)
class RetrainDecision:
    start: bool
    new_people_labels: int
    since_version: str | None
    reason: str


def decide_retrain(latest: DatasetVersion, last_trained: DatasetVersion | None, min_new_labels: int
                   ) -> RetrainDecision:
    """Pure: start training on ``latest`` when no version was trained yet, or when people's labels grew by at
    least ``min_new_labels`` since ``last_trained``."""
    since = last_trained.version if last_trained is not None else None
    new = people_labels(latest) - (people_labels(last_trained) if last_trained is not None else 0)
    if last_trained is None:
        return RetrainDecision(True, new, since, "no version was trained yet")
    if last_trained.version == latest.version:
        return RetrainDecision(False, 0, since, f"{latest.version} was already trained")
    if new >= min_new_labels:
        return RetrainDecision(True, new, since, f"{new} new labels from people since {since} "
                                                 f"(training.retrain_min_new_labels {min_new_labels})")
    return RetrainDecision(False, new, since, f"only {new} new labels from people since {since}; training waits "
                                              f"for {min_new_labels} (training.retrain_min_new_labels)")


def _starts_dir(data_root: str, settings: Settings) -> str:
    return storage.join(data_root, settings.storage.labeling_prefix.strip("/"), STARTS_FOLDER).rstrip("/") + "/"


def last_trained_version(data_root: str, settings: Settings) -> str | None:
    """The newest version a training run was started for (``vNNNN``), from the record of starts."""
    names = [storage.basename(uri).removesuffix(".json") for uri in storage.list_uris(_starts_dir(data_root, settings))
             if uri.endswith(".json")]
    return max(names, key=lambda v: int(v[1:])) if names else None


def record_training_start(data_root: str, settings: Settings, version: str, execution_id: str) -> None:
    storage.write_text(_starts_dir(data_root, settings) + f"{version}.json",
                       json.dumps({"version": version, "execution_id": execution_id, "started_at": time.time()}),
                       content_type="application/json")


def retrain_decision(data_root: str, settings: Settings, latest_uri: str) -> RetrainDecision:
    """The decision for the version at ``latest_uri`` given what was trained before."""
    latest = read_version_info(latest_uri)
    trained = last_trained_version(data_root, settings)
    last = read_version_info(storage.join(storage.parent(latest_uri.rstrip("/") + "/"), trained) + "/") \
        if trained else None
    return decide_retrain(latest, last, settings.training.retrain_min_new_labels)
