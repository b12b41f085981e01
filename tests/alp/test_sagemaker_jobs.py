"""Job names keyed by inputs, and which attempt a retried step works with (pure)."""

from __future__ import annotations

import botocore.exceptions
import pytest

from alp.sagemaker_jobs import (
    JOB_NAME,
    MAX_ATTEMPTS,
    JobAttemptsExhausted,
    describe_or_none,
    job_name,
    plan_attempt,
)

DIGEST = "ab" * 32


def _name(attempt: int) -> str:
    return job_name("alp", "infer", "20260101T000000Z-0123456789abcdef", DIGEST, attempt)


def _plan(statuses: dict[str, str]):
    return plan_attempt(_name, statuses.get)


def test_given_no_job_then_the_first_attempt_starts_under_the_plain_name():
    plan = _plan({})
    assert (plan.name, plan.attempt, plan.action, plan.earlier_failures) == (
        "alp-infer-20260101T000000Z-0123456789abcdef-abababababab", 1, "start", ())


@pytest.mark.parametrize(("status", "action"), [("InProgress", "wait"), ("Stopping", "wait"), ("Completed", "fetch")])
def test_given_the_first_attempt_running_or_completed_then_the_step_takes_it_over(status, action):
    plan = _plan({_name(1): status})
    assert (plan.attempt, plan.action) == (1, action)


def test_given_failed_attempts_then_the_next_one_starts_with_a_visible_suffix():
    plan = _plan({_name(1): "Failed", _name(2): "Stopped"})
    assert (plan.name, plan.attempt, plan.action) == (_name(3), 3, "start")
    assert plan.name.endswith("-abababababab-a3")
    assert plan.earlier_failures == (f"{_name(1)}: Failed", f"{_name(2)}: Stopped")
    # a later attempt that completed is found behind the failed one
    assert _plan({_name(1): "Failed", _name(2): "Completed"}).action == "fetch"


def test_given_every_attempt_failed_then_no_more_jobs_are_started():
    with pytest.raises(JobAttemptsExhausted, match=f"all {MAX_ATTEMPTS} attempts"):
        _plan({_name(n): "Failed" for n in range(1, MAX_ATTEMPTS + 1)})


def test_names_are_valid_and_bounded_and_keep_their_digest():
    long = job_name("a-twenty-char-prefix", "train", "v0003/odd label_" * 8, DIGEST, MAX_ATTEMPTS)
    assert len(long) == 63 and JOB_NAME.match(long) and long.endswith(f"-{DIGEST[:12]}-a{MAX_ATTEMPTS}")
    assert job_name("alp", "train", "", DIGEST) == f"alp-train-{DIGEST[:12]}"
    assert job_name("alp", "train", "v1", DIGEST) != job_name("alp", "train", "v1", "cd" * 32)
    with pytest.raises(ValueError, match="hex digest"):
        job_name("alp", "train", "v1", "2026-01-01")


def _client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "DescribeTrainingJob")


def test_a_missing_job_is_none_and_every_other_error_is_raised():
    def raising(exc: Exception):
        def describe() -> dict[str, object]:
            raise exc
        return describe

    assert describe_or_none(raising(_client_error("ValidationException", "Requested resource not found."))) is None
    assert describe_or_none(raising(_client_error("ValidationException", "Could not find job 'x'"))) is None
    with pytest.raises(botocore.exceptions.ClientError):
        describe_or_none(raising(_client_error("ValidationException", "1 validation error: TrainingJobName")))
    with pytest.raises(botocore.exceptions.ClientError):
        describe_or_none(raising(_client_error("AccessDeniedException", "not found in policy")))
    assert describe_or_none(lambda: {"TrainingJobStatus": "Completed"}) == {"TrainingJobStatus": "Completed"}


def test_a_create_refused_for_a_taken_name_is_told_apart_from_other_refusals():
    from alp.sagemaker_jobs import name_taken

    taken = _client_error("ValidationException", "Job name must be unique within an AWS account and region, and a "
                                                 "job with this name already exists (arn:...)")
    assert name_taken(taken)
    assert not name_taken(_client_error("ValidationException", "1 validation error detected: RoleArn"))
    assert not name_taken(_client_error("ResourceLimitExceeded", "account-level service limit"))
