"""Datasets that last, as the synthesized stack states it: no lifecycle rule can expire what a dataset version
references (its files and its images' content-addressed copies), and those objects are write-once for every
principal (the data bucket's policy), evaluated here with the roles' true statements.

Each check is a function over the template, and each is shown to catch the fault it exists for on a template
changed to hold it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

from alp.cloudformation.template import StackTemplate  # noqa: E402
from alp.rehearsal.policy import Decision, Request, evaluate  # noqa: E402
from alp.rehearsal.run import ACCOUNT, synthesized_stack  # noqa: E402

REGION = "eu-west-1"
# what a dataset version references: its own files and the copies of its images (alp/pixels.py)
REFERENCED = ("datasets/v0001/manifest.jsonl", "datasets/v0001/dataset.json",
              "images/sha256/ab/" + "ab" * 32 + ".jpg")


@pytest.fixture(scope="module")
def template() -> StackTemplate:
    return StackTemplate.load(synthesized_stack("yolo"), account=ACCOUNT, region=REGION)


def _bucket_named(t: StackTemplate, part: str) -> str:
    names = [name for _res, name, _props in t.each("AWS::S3::Bucket") if name.endswith(part)]
    assert len(names) == 1, names
    return names[0]


def _rule_prefix(rule: dict[str, Any]) -> str | None:
    """The key prefix a rule applies to; None when a tag filter narrows it (then it matches only tagged
    objects, and nothing here tags a dataset object)."""
    flt = rule.get("Filter") or {}
    if rule.get("TagFilters") or flt.get("Tag") or (flt.get("And") or {}).get("Tags"):
        return None
    return str(rule.get("Prefix", flt.get("Prefix", (flt.get("And") or {}).get("Prefix", ""))))


def expiring_rules(bucket_props: dict[str, Any], key: str) -> Iterator[str]:
    """Ids of the bucket's lifecycle rules that could expire, delete or move to an archive class any version of
    ``key`` (current or noncurrent)."""
    destroys = ("ExpirationInDays", "ExpirationDate", "NoncurrentVersionExpiration",
                "NoncurrentVersionExpirationInDays", "Transitions", "NoncurrentVersionTransitions", "Transition",
                "NoncurrentVersionTransition")
    for rule in (bucket_props.get("LifecycleConfiguration") or {}).get("Rules", []):
        if rule.get("Status", "Enabled") != "Enabled" or not any(k in rule for k in destroys):
            continue
        prefix = _rule_prefix(rule)
        if prefix is not None and key.startswith(prefix):
            yield str(rule.get("Id", "rule"))


def _bucket_props(t: StackTemplate, name: str) -> dict[str, Any]:
    for _res, bucket, props in t.each("AWS::S3::Bucket"):
        if bucket == name:
            return props
    raise AssertionError(name)


def test_given_the_stack_then_no_lifecycle_rule_expires_what_a_dataset_version_references(template) -> None:
    data = _bucket_props(template, _bucket_named(template, "-data"))
    for key in REFERENCED:
        assert list(expiring_rules(data, key)) == [], key
    # the unlabeled bucket does expire old versions: which is why datasets keep copies instead of references
    unlabeled = _bucket_props(template, _bucket_named(template, "-unlabeled"))
    assert "expire-old-versions" in list(expiring_rules(unlabeled, "incoming/cam1/frame.jpg"))


def test_given_an_expiring_rule_on_the_data_bucket_then_the_check_names_it(template) -> None:
    data = copy.deepcopy(_bucket_props(template, _bucket_named(template, "-data")))
    data.setdefault("LifecycleConfiguration", {"Rules": []})["Rules"].append(
        {"Id": "expire-old-versions", "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 30}})
    assert all(list(expiring_rules(data, key)) == ["expire-old-versions"] for key in REFERENCED)
    scoped = copy.deepcopy(data)
    scoped["LifecycleConfiguration"]["Rules"][-1]["Prefix"] = "batches/"
    assert all(list(expiring_rules(scoped, key)) == [] for key in REFERENCED)


def _bucket_denies(t: StackTemplate, bucket: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _res, _name, props in t.each("AWS::S3::BucketPolicy"):
        if props["Bucket"] == bucket:
            out.extend(s for s in props["PolicyDocument"]["Statement"] if s["Effect"] == "Deny")
    return out


def _role_statements(t: StackTemplate, role_part: str) -> list[dict[str, Any]]:
    roles = [lid for lid in t.logical_ids("AWS::IAM::Role") if role_part in lid]
    assert len(roles) == 1, roles
    role_name = t.physical_name(roles[0])
    out: list[dict[str, Any]] = []
    for policy in t.resources("AWS::IAM::Policy"):
        props = t.properties(policy.logical_id)
        if role_name in props.get("Roles", []):
            stmts = props["PolicyDocument"]["Statement"]
            out.extend(stmts if isinstance(stmts, list) else [stmts])
    return out


def decide(role: list[dict[str, Any]], bucket_denies: list[dict[str, Any]], request: Request) -> Decision:
    """IAM's answer within one account: an explicit Deny in the bucket policy or the role refuses, else the
    role's Allow grants (over TLS, as every step calls)."""
    request = Request(request.action, request.resource, {**request.context, "aws:SecureTransport": "true"})
    denied = evaluate(bucket_denies, request)
    return denied if denied.effect == "deny" else evaluate(role, request)


@pytest.mark.parametrize("key", REFERENCED)
def test_given_the_merge_role_then_it_can_add_but_never_replace_or_delete_a_dataset_object(template, key) -> None:
    bucket = _bucket_named(template, "-data")
    denies, merge = _bucket_denies(template, bucket), _role_statements(template, "LabelingPipelineBuildRole")
    arn = f"arn:aws:s3:::{bucket}/{key}"
    assert decide(merge, denies, Request("s3:PutObject", arn, {"s3:if-none-match": "*"})).allowed
    plain_put = decide(merge, denies, Request("s3:PutObject", arn))
    assert plain_put.effect == "deny" and plain_put.statement == "WriteOnceDatasets"
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        assert decide(merge, denies, Request(action, arn)).effect == "deny"
    # the training role only reads them
    training = _role_statements(template, "TrainingPipelineBuildRole")
    assert decide(training, denies, Request("s3:GetObject", arn)).allowed
    assert not decide(training, denies, Request("s3:PutObject", arn, {"s3:if-none-match": "*"})).allowed


def test_given_the_write_once_policy_then_other_prefixes_stay_writable(template) -> None:
    bucket = _bucket_named(template, "-data")
    denies, merge = _bucket_denies(template, bucket), _role_statements(template, "LabelingPipelineBuildRole")
    assert decide(merge, denies, Request("s3:PutObject", f"arn:aws:s3:::{bucket}/batches/b1/inference/auto.jsonl")).allowed


def test_given_the_write_once_statement_removed_then_a_plain_overwrite_is_allowed(template) -> None:
    """The check above can fail: without the bucket policy's statement the Merge role's own grant lets a plain
    PutObject replace a dataset file."""
    bucket = _bucket_named(template, "-data")
    denies = [s for s in _bucket_denies(template, bucket) if s.get("Sid") != "WriteOnceDatasets"]
    merge = _role_statements(template, "LabelingPipelineBuildRole")
    assert decide(merge, denies, Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{REFERENCED[0]}")).allowed
