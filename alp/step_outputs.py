"""Outputs of pure steps, keyed by their inputs: a re-run with the same inputs finds the stored output.

Infer (a batch manifest, a bundle, the judgement settings) and Prepare (a dataset version, the settings) are
pure: the same inputs give the same output. A retried pipeline stage, or a step run again after it crashed past
its last write, should return what is stored rather than compute it again. The output folder therefore holds
``inputs.json`` (:class:`StepRecord`): the digest of what the output was made from, and whether the step
finished writing it.

The record is written twice. Before the step rewrites a folder that holds a record, it marks it incomplete (the
new inputs' digest, ``complete: false``), so a crash half way through can never leave an older complete record
beside newer, partial files. After every other file, last, it writes the record again with ``complete: true``.
A reader trusts the folder only when the record is complete and its digest is the one of its own inputs: the
check is by content, not by the existence of a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from alp import storage

RECORD_FILE = "inputs.json"


class StepRecord(BaseModel):
    """``inputs.json``: what a step's output was made from."""

    step: str
    inputs: dict[str, Any] = Field(description="the inputs, readable (their digest is inputs_sha256)")
    inputs_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    complete: bool = Field(description="false while the step writes the folder; true once everything is written")
    result: dict[str, Any] = Field(default_factory=dict, description="what the step reports when it is reused")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def digest(inputs: Mapping[str, Any]) -> str:
    """sha256 of the inputs as canonical JSON (sorted keys): equal inputs, equal digests, in any process."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_sha256(uri: str) -> str:
    """sha256 of an object's bytes (a manifest): inputs are keyed by what they hold, not where they are."""
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def read_record(out_uri: str) -> StepRecord | None:
    """The folder's record; None when there is none or it cannot be read (then nothing there is trusted)."""
    uri = storage.join(out_uri, RECORD_FILE)
    try:
        return StepRecord.model_validate_json(storage.read_text(uri))
    except (storage.ObjectNotFound, ValidationError, UnicodeDecodeError):
        return None


def stored_output(out_uri: str, step: str, inputs_sha256: str) -> StepRecord | None:
    """The record of a complete output of ``step`` made from exactly these inputs, else None."""
    record = read_record(out_uri)
    if record is None or not record.complete or record.step != step or record.inputs_sha256 != inputs_sha256:
        return None
    return record


def begin_output(out_uri: str, step: str, inputs: Mapping[str, Any]) -> None:
    """Before the step writes: a record already in the folder (of other inputs, or complete) says incomplete."""
    if read_record(out_uri) is None:
        return  # nothing there claims to be complete; the folder may even have to stay empty for the step
    _write(out_uri, StepRecord(step=step, inputs=dict(inputs), inputs_sha256=digest(inputs), complete=False))


def finish_output(out_uri: str, step: str, inputs: Mapping[str, Any], result: Mapping[str, Any] | None = None
                  ) -> StepRecord:
    """After every other file of the output: the complete record (the last write of the step)."""
    record = StepRecord(step=step, inputs=dict(inputs), inputs_sha256=digest(inputs), complete=True,
                        result=dict(result or {}))
    _write(out_uri, record)
    return record


def _write(out_uri: str, record: StepRecord) -> None:
    storage.write_text(storage.join(out_uri, RECORD_FILE), record.to_json(), content_type="application/json")


@functools.lru_cache(maxsize=8)
def code_sha256(*packages: str) -> str:
    """sha256 of the Python sources of ``packages`` (importable names, e.g. ``inference``), by relative path: the
    code that computes a step's output is one of its inputs, so a fix never hides behind an older output."""
    import importlib

    h = hashlib.sha256()
    for package in sorted(packages):
        root = Path(str(importlib.import_module(package).__file__)).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(f"{package}/{path.relative_to(root).as_posix()}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()
