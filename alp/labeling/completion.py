"""The split human step's trigger: which waiting batches an event starts the labeling-completion pipeline for.

The Label step ends as soon as it has created a batch's labeling jobs, leaving the batch in the waiting index
(:mod:`alp.labeling.waiting`). Two events start the completion pipeline (Label, Merge, Requeue) for it:

- Ground Truth's ``SageMaker Ground Truth Labeling Job State Change`` (source ``aws.sagemaker``, the job's ARN
  in ``resources``, ``detail.LabelingJobStatus``): once the job is over (Completed, Failed or Stopped) every
  batch waiting on it is started, whatever is in flight (the event is news: an execution already running may
  have looked before the job ended).
- the scheduled check (``Scheduled Event`` from ``aws.events``): Label Studio tells nobody when people finish,
  so each check starts every batch waiting on Label Studio (or the local workforce) that has no execution
  queued or running yet; a busy pipeline never piles up one execution per batch per check. A batch waiting on
  Ground Truth is left to its event until the event is overdue (``labeling.task_availability_seconds`` and an
  hour's grace since the Label step last found it waiting): then the check starts it, so a lost event still
  ends in collected labels and a requeue of what people never finished.

Starting twice is harmless (QUEUED executions, idempotent steps: docs/reliability.md); the request tokens and
the in-flight check only spare the builds. :func:`decide` is the pure part; :func:`run_completion` reads the
index, asks CodePipeline what is in flight, starts the executions and logs one JSON line per decision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from alp import aws
from alp.labeling.contracts import job_name, job_name_from_arn
from alp.labeling.waiting import WaitingBatch, waiting_batches, waiting_dir
from alp.pipeline_runs import start_execution
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import BATCH_VARIABLE, LABELING_COMPLETION_PIPELINE

log = logging.getLogger("alp.labeling_completion")

LABELING_JOB_SOURCE = "aws.sagemaker"
LABELING_JOB_DETAIL_TYPE = "SageMaker Ground Truth Labeling Job State Change"
SCHEDULE_SOURCE = "aws.events"
SCHEDULE_DETAIL_TYPE = "Scheduled Event"
# Ground Truth ends a job at the latest when its tasks' availability runs out; its event follows within
# minutes. The check waits this much longer before it takes a batch's event for lost.
GROUND_TRUTH_EVENT_GRACE_SECONDS = 3600
# A job's final states (alp.labeling.backend.FINAL_STATES, not imported: the Lambda asset stays without the
# backends' rendering code); the only ones Ground Truth's event rule passes.
FINAL_JOB_STATES: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})
IN_FLIGHT = frozenset({"InProgress", "Stopping"})  # a QUEUED execution waiting for a stage is InProgress too
_MAX_EXECUTION_PAGES = 10


class CompletionEventError(ValueError):
    """The event is neither a labeling-job state change nor the scheduled check."""


class LabelingJobStateChange(BaseModel):
    """Ground Truth's labeling-job state change, as EventBridge delivers it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["labeling-job"] = "labeling-job"
    event_id: str
    job_arn: str
    status: str

    @property
    def job_name(self) -> str:
        return job_name_from_arn(self.job_arn)

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATES


class ScheduledCheck(BaseModel):
    """A tick of the scheduled check of waiting batches."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["schedule"] = "schedule"
    event_id: str
    time: str = ""


CompletionEvent = LabelingJobStateChange | ScheduledCheck


def parse_event(event: Mapping[str, Any]) -> CompletionEvent:
    """The typed event; :class:`CompletionEventError` for anything else."""
    source, detail_type = event.get("source"), event.get("detail-type")
    event_id = str(event.get("id") or "")
    if source == LABELING_JOB_SOURCE and detail_type == LABELING_JOB_DETAIL_TYPE:
        arns = [r for r in event.get("resources") or [] if isinstance(r, str) and ":labeling-job/" in r]
        status = (event.get("detail") or {}).get("LabelingJobStatus")
        if len(arns) != 1 or not isinstance(status, str):
            raise CompletionEventError(f"labeling-job state change {event_id!r} without one job ARN and a "
                                       "detail.LabelingJobStatus")
        return LabelingJobStateChange(event_id=event_id, job_arn=arns[0], status=status)
    if source == SCHEDULE_SOURCE and detail_type == SCHEDULE_DETAIL_TYPE:
        return ScheduledCheck(event_id=event_id, time=str(event.get("time") or ""))
    raise CompletionEventError(f"not a labeling-job state change or a scheduled check: source {source!r}, "
                               f"detail-type {detail_type!r}")


def job_name_prefix(settings: Settings) -> str:
    """What every labeling job of this project is named with (``<resource prefix>-``), as the Label step names
    them (:func:`alp.labeling.contracts.job_name`: ``<prefix>-<kind>-<digest>``)."""
    return job_name(settings.storage.resource_prefix, "head-boxes", "").rsplit("-", 2)[0] + "-"


def waiting_key_prefix(settings: Settings) -> str:
    """The data-bucket key prefix of the waiting index (``labeling/waiting/``): all the trigger reads."""
    root = "s3://bucket/"
    return waiting_dir(root, settings).removeprefix(root)


@dataclass(frozen=True)
class CompletionDecision:
    """Start the completion pipeline for one batch, or not, and why."""

    batch_dir: str
    batch_manifest_uri: str
    start: bool
    reason: str
    request_token: str | None = None


@dataclass(frozen=True)
class CompletionPlan:
    event: CompletionEvent
    decisions: list[CompletionDecision] = field(default_factory=list)
    ignored: str | None = None  # why the event concerns no batch at all

    @property
    def starts(self) -> list[CompletionDecision]:
        return [d for d in self.decisions if d.start]


def _token(*parts: str) -> str:
    """CodePipeline's clientRequestToken (``[a-zA-Z0-9-]``, at most 128): a redelivered event starts nothing new."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def decide(event: CompletionEvent, waiting: Sequence[WaitingBatch], settings: Settings, *, now: float,
           in_flight: Collection[str] = ()) -> CompletionPlan:
    """Which of the ``waiting`` batches ``event`` starts the completion pipeline for.

    Args:
        event: The parsed event.
        waiting: The waiting index's entries in state ``waiting``.
        settings: The deployed settings (job-name prefix, task availability).
        now: The clock (seconds since the epoch), for Ground Truth batches whose event is overdue.
        in_flight: Batch manifest URIs with a completion execution queued or running (the check skips them).
    """
    if isinstance(event, LabelingJobStateChange):
        if not event.final:
            return CompletionPlan(event, ignored=f"labeling job {event.job_name} is {event.status}, not over")
        if not event.job_name.lower().startswith(job_name_prefix(settings).lower()):
            return CompletionPlan(event, ignored=f"labeling job {event.job_name} is not one of this project's")
        name = event.job_name.lower()  # names are unique case-insensitively; ARNs may lower-case them
        decisions = [
            CompletionDecision(entry.batch_dir, entry.batch_manifest_uri, True,
                               f"labeling job {event.job_name} is {event.status}",
                               _token("job", name, event.status, entry.batch_manifest_uri))
            for entry in waiting if name in {job.lower() for job in entry.jobs}]
        return CompletionPlan(event, decisions,
                              None if decisions else f"no batch waits on labeling job {event.job_name}")
    overdue_after = settings.labeling.task_availability_seconds + GROUND_TRUTH_EVENT_GRACE_SECONDS
    decisions = []
    for entry in waiting:
        jobs = ", ".join(entry.jobs) or "its jobs"
        if entry.batch_manifest_uri in in_flight:
            decisions.append(CompletionDecision(entry.batch_dir, entry.batch_manifest_uri, False,
                                                "a completion execution for the batch is already queued or running"))
        elif entry.backend == "ground-truth" and now - entry.since < overdue_after:
            decisions.append(CompletionDecision(
                entry.batch_dir, entry.batch_manifest_uri, False,
                f"waiting on Ground Truth job {jobs}: its state-change event starts the batch (the check steps in "
                f"{overdue_after} s after the batch began waiting)"))
        else:
            why = ("Ground Truth's event is overdue" if entry.backend == "ground-truth"
                   else f"the scheduled check of batches waiting on {entry.backend}")
            decisions.append(CompletionDecision(entry.batch_dir, entry.batch_manifest_uri, True,
                                                f"{why} (job {jobs})",
                                                _token("check", event.event_id, entry.batch_manifest_uri)))
    return CompletionPlan(event, decisions, None if decisions else "no batch is waiting")


# --- the adapter: the waiting index, CodePipeline --------------------------------------------------------
def executions_in_flight(pipeline_name: str) -> set[str]:
    """Batch manifest URIs of the pipeline's executions that are queued or running.

    Newest first, page by page; it stops at the first page with none in flight (QUEUED executions finish in
    order, so those in flight are the newest ones)."""
    cp = aws.client("codepipeline")
    found: set[str] = set()
    token: str | None = None
    for _ in range(_MAX_EXECUTION_PAGES):
        page = cp.list_pipeline_executions(pipelineName=pipeline_name, maxResults=100,
                                           **({"nextToken": token} if token else {}))
        running = [s["pipelineExecutionId"] for s in page.get("pipelineExecutionSummaries", [])
                   if s.get("status") in IN_FLIGHT]
        for execution_id in running:
            execution = cp.get_pipeline_execution(pipelineName=pipeline_name,
                                                  pipelineExecutionId=execution_id)["pipelineExecution"]
            found.update(str(v.get("resolvedValue") or v.get("value") or "") for v in execution.get("variables", [])
                         if v.get("name") == BATCH_VARIABLE.name)
        token = page.get("nextToken")
        if not running or not token:
            break
    found.discard("")
    return found


@dataclass
class CompletionReport:
    """What one invocation did (the handler's return value)."""

    event: str
    started: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: str | None = None
    failed: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"event": self.event, "started": self.started, "skipped": self.skipped, "ignored": self.ignored,
                "failed": self.failed}


class CompletionStartFailed(RuntimeError):
    """Some starts failed (the others went through); raised so that the invocation is retried."""


def _log(record: dict[str, Any]) -> None:
    log.info(json.dumps({"component": "labeling-completion", **record}, sort_keys=True))


def run_completion(event: Mapping[str, Any], settings: Settings, names: ResourceNames, *,
                   now: float | None = None) -> CompletionReport:
    """Start the completion pipeline for the batches ``event`` concerns; one JSON log line per decision.

    Raises :class:`CompletionEventError` for an event of another kind and :class:`CompletionStartFailed` when a
    start failed (after trying every other one: a retry starts nothing twice, thanks to the request tokens)."""
    parsed = parse_event(event)
    label = parsed.kind
    base: dict[str, Any] = {"trigger": label, "event_id": parsed.event_id}
    if isinstance(parsed, LabelingJobStateChange):
        base.update(job=parsed.job_name, job_status=parsed.status)
    report = CompletionReport(event=label)
    if isinstance(parsed, LabelingJobStateChange) and not parsed.final:
        waiting: list[WaitingBatch] = []  # nothing to read: the plan ignores a job still running
    else:
        waiting = waiting_batches(names.data_root, settings)
    in_flight = executions_in_flight(names.labeling_completion_pipeline) if isinstance(parsed, ScheduledCheck) \
        and waiting else set()
    plan = decide(parsed, waiting, settings, now=time.time() if now is None else now, in_flight=in_flight)
    if plan.ignored is not None:
        report.ignored = plan.ignored
        _log({**base, "decision": "ignore", "reason": plan.ignored})
    for decision in plan.decisions:
        record = {**base, "batch": decision.batch_dir, "reason": decision.reason}
        if not decision.start:
            report.skipped.append({"batch": decision.batch_dir, "reason": decision.reason})
            _log({**record, "decision": "skip"})
            continue
        try:
            execution_id = start_execution(names.labeling_completion_pipeline, LABELING_COMPLETION_PIPELINE,
                                           {BATCH_VARIABLE.name: decision.batch_manifest_uri},
                                           request_token=decision.request_token)
        except Exception as exc:  # noqa: BLE001 - every batch gets its try; the invocation fails afterwards
            error = f"{type(exc).__name__}: {aws.error_code(exc) or exc}"
            report.failed.append({"batch": decision.batch_dir, "error": error})
            _log({**record, "decision": "start-failed", "error": error})
            continue
        report.started.append({"batch": decision.batch_dir, "execution_id": execution_id})
        _log({**record, "decision": "start", "pipeline": names.labeling_completion_pipeline,
              "execution_id": execution_id})
    if report.failed:
        raise CompletionStartFailed(f"{len(report.failed)} of {len(plan.starts)} completion starts failed: "
                                    f"{report.failed}")
    return report
