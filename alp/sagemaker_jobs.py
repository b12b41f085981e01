"""SageMaker jobs named by their inputs, so that a retried step finds the job it started.

A CodePipeline stage that is retried (or a CodeBuild container that died half way and runs again) must not
start a second training or Processing job for the same work. Every job name therefore derives from a digest
of what the job computes (:func:`job_name`), never from the clock; the step looks for the job under that name
before it creates one. SageMaker keeps a name forever, also after the job failed, so a job that ended Failed
or Stopped is followed by another *attempt* with a visible suffix (``-a2``, ``-a3``...): the step describes
the attempts in order and the first that is missing, running or completed decides what it does
(:func:`plan_attempt`, pure).

The SageMaker calls themselves stay in the job's own module (``training/sagemaker_job.py``,
``inference/processing.py``); this module only names and decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from alp import aws

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # training and Processing job names alike
MAX_NAME = 63
DIGEST_CHARS = 12  # 48 bits: a collision between two different inputs of one project is not a practical risk
# A step that failed this many times in a row has a cause a retry will not fix (bad data, a code error, a quota);
# the cap keeps an automatic retry loop from paying for jobs without end.
MAX_ATTEMPTS = 9
RUNNING_STATES = frozenset({"InProgress", "Stopping"})
ENDED_WITHOUT_RESULT = frozenset({"Failed", "Stopped"})
AttemptAction = Literal["start", "wait", "fetch"]


class JobAttemptsExhausted(RuntimeError):
    """Every allowed attempt of a job ended Failed or Stopped."""


def job_name(prefix: str, kind: str, label: str, digest: str, attempt: int = 1) -> str:
    """``<prefix>-<kind>-<label>-<digest12>[-a<attempt>]``, valid for SageMaker (63 characters at most).

    The digest and the attempt suffix are what make the name unique, so they are never cut: ``label`` (a
    dataset version, a batch id: only there for people reading the console) is shortened instead.
    """
    if attempt < 1 or attempt > MAX_ATTEMPTS:
        raise ValueError(f"attempt {attempt} is outside 1..{MAX_ATTEMPTS}")
    if len(digest) < DIGEST_CHARS or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"job name digest {digest!r} is not a hex digest")
    tail = f"-{digest[:DIGEST_CHARS]}" + (f"-a{attempt}" if attempt > 1 else "")
    clean = re.sub(r"[^a-zA-Z0-9]+", "-", label).strip("-")
    head = f"{prefix}-{kind}" + (f"-{clean}" if clean else "")
    name = head[:MAX_NAME - len(tail)].rstrip("-") + tail
    if not JOB_NAME.match(name):
        raise ValueError(f"cannot build a valid SageMaker job name from {prefix!r}, {kind!r} and {label!r}")
    return name


@dataclass(frozen=True)
class AttemptPlan:
    """What a step does about its job: ``start`` attempt ``attempt`` (no job of that name exists), ``wait`` for
    it (running: an earlier run of the step started it), or ``fetch`` its result (it completed)."""

    name: str
    attempt: int
    action: AttemptAction
    earlier_failures: tuple[str, ...] = ()  # "name: status" of the attempts before this one


def plan_attempt(name_of: Callable[[int], str], status_of: Callable[[str], str | None]) -> AttemptPlan:
    """The attempt this step works with: the first one, in order, that is missing, running or completed.

    ``status_of`` answers a job's status, None when no job has that name. Attempts that ended Failed or Stopped
    are passed over (their names are spent). Raises :class:`JobAttemptsExhausted` after ``MAX_ATTEMPTS``.
    """
    failures: list[str] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        name = name_of(attempt)
        status = status_of(name)
        if status is None:
            return AttemptPlan(name, attempt, "start", tuple(failures))
        if status == "Completed":
            return AttemptPlan(name, attempt, "fetch", tuple(failures))
        if status in ENDED_WITHOUT_RESULT:
            failures.append(f"{name}: {status}")
            continue
        return AttemptPlan(name, attempt, "wait", tuple(failures))
    raise JobAttemptsExhausted(
        f"all {MAX_ATTEMPTS} attempts of this job ended without a result ({'; '.join(failures)}): fix the cause "
        "their failure reasons name (DescribeTrainingJob / DescribeProcessingJob), then change the inputs or "
        "settings, which names a new job")


def name_taken(exc: BaseException) -> bool:
    """Whether a create call failed because a job of that name exists: another run of the same step (a duplicate
    pipeline execution) created it between this run's look and its create. The step then takes that job over."""
    return aws.error_code(exc) in ("ValidationException", "ResourceInUse") and bool(
        re.search(r"must be unique|already exists", str(exc), re.IGNORECASE))


def describe_or_none(describe: Callable[[], dict[str, object]]) -> dict[str, object] | None:
    """``describe()``'s answer, None when SageMaker says the job does not exist.

    SageMaker answers a missing job with a ``ValidationException`` ("Requested resource not found", "Could not
    find ..."); any other error (throttling beyond the retries, access denied, a malformed name) is raised."""
    try:
        return describe()
    except Exception as exc:
        if aws.error_code(exc) == "ValidationException" and re.search(r"not (be )?found|could not find",
                                                                       str(exc), re.IGNORECASE):
            return None
        raise
