"""Settings: defaults, validation naming the field, context overrides, file and S3 loading."""

from __future__ import annotations

import json

import boto3
import pytest
from paths import REPO_ROOT  # noqa: E402

from alp import storage
from alp.settings import (
    CODEBUILD_MAX_TIMEOUT_MINUTES,
    PROCESSING_MAX_RUNTIME_LIMIT_SECONDS,
    PROCESSING_WAIT_MARGIN_MINUTES,
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
    settings_from_cdk_json,
    settings_from_context,
)


def test_defaults_match_the_design():
    s = Settings()
    assert s.inference.main_threshold == 0.6
    assert s.inference.additional_threshold == 0.6
    assert s.judgement.audit_fraction == 0.05
    assert s.labeling.backend == "ground-truth"
    assert s.schema_.num_keypoints == 17


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"judgement": {"audit_fraction": 1.5}}, "settings.judgement.audit_fraction"),
        ({"inference": {"main_threshold": "high"}}, "settings.inference.main_threshold"),
        ({"labeling": {"backend": "mturk"}}, "settings.labeling.backend"),
        ({"labeling": {"workteam_arn": "not-an-arn"}}, "settings.labeling.workteam_arn"),
        ({"labeling": {"head_label_attribute": "x-metadata"}}, "settings.labeling.head_label_attribute"),
        ({"training": {"imgsz": 100}}, "settings.training.imgsz"),
        ({"keypoint_schema": "coco18"}, "settings.keypoint_schema"),
        ({"judgement": {"no_such_field": 1}}, "settings.judgement.no_such_field"),
    ],
)
def test_bad_value_fails_with_one_message_naming_the_field(data, field):
    with pytest.raises(SettingsError) as exc:
        parse_settings(data)
    assert str(exc.value).startswith(field)


def test_bad_json_is_a_clear_error():
    with pytest.raises(SettingsError, match="not valid JSON"):
        parse_settings("{nope")


def test_context_object_and_dotted_cli_overrides():
    ctx = {
        "alp": {"labeling": {"backend": "local"}},
        "alp:judgement.audit_fraction": "0.1",
        "alp:labeling.workteam_arn": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/team",
    }
    s = settings_from_context(ctx)
    assert s.labeling.backend == "local"
    assert s.judgement.audit_fraction == 0.1
    assert s.labeling.workteam_arn.endswith("/team")


def test_cdk_json_and_file_and_s3_give_the_same_settings(tmp_path, aws_mock):
    data = {"judgement": {"aggregation": "min"}, "training": {"epochs": 3}}
    (tmp_path / "cdk.json").write_text(json.dumps({"app": "x", "context": {"alp": data}}))
    from_cdk = settings_from_cdk_json(tmp_path / "cdk.json")
    path = tmp_path / "settings.json"
    path.write_text(from_cdk.to_json())
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="cfg-bucket")
    storage.write_text("s3://cfg-bucket/config/settings.json", from_cdk.to_json())
    assert load_settings(str(path)) == from_cdk
    assert load_settings("s3://cfg-bucket/config/settings.json") == from_cdk
    assert from_cdk.sha256() == load_settings(str(path)).sha256()
    assert from_cdk.judgement.aggregation == "min"


def test_repository_cdk_json_is_valid():

    root = REPO_ROOT
    if not (root / "cdk.json").exists():
        pytest.skip("cdk.json not written yet")
    settings_from_cdk_json(root / "cdk.json")


def test_env_variable_points_steps_at_the_deployed_settings(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"training": {"epochs": 7}}))
    monkeypatch.setenv("ALP_SETTINGS_URI", str(path))
    assert load_settings().training.epochs == 7


def test_default_processing_threshold_is_below_the_largest_batch():
    """Scale-out inference is reachable with the defaults: a full batch holds more images than the threshold."""
    s = Settings()
    assert s.inference.processing_threshold_images < s.trigger.max_batch_records
    assert s.inference.processing_threshold_images == 500 and s.trigger.max_batch_records == 1000


@pytest.mark.parametrize(
    "data",
    [
        {"inference": {"processing_threshold_images": 1000}},  # equal: no batch holds more
        {"inference": {"processing_threshold_images": 20000}},  # the former default
        {"trigger": {"max_batch_records": 400}},  # lowering the batch size below the default threshold
        {"inference": {"processing_threshold_images": 10000}, "trigger": {"max_batch_records": 10000}},
    ],
)
def test_a_processing_threshold_no_batch_can_pass_is_refused_naming_both_settings(data):
    with pytest.raises(SettingsError) as exc:
        parse_settings(data)
    message = str(exc.value)
    assert message.startswith("settings.inference.processing_threshold_images: must be below "
                              "trigger.max_batch_records")
    assert "SageMaker Processing" in message and "(got " in message


def test_a_processing_threshold_below_the_batch_size_is_accepted_from_any_source():
    assert parse_settings({"inference": {"processing_threshold_images": 9999},
                           "trigger": {"max_batch_records": 10000}}).trigger.max_batch_records == 10000
    s = settings_from_context({"alp": {}, "alp:trigger.max_batch_records": "50",
                               "alp:inference.processing_threshold_images": "10"})
    assert (s.inference.processing_threshold_images, s.trigger.max_batch_records) == (10, 50)
    with pytest.raises(SettingsError, match="^settings.inference.processing_threshold_images"):
        Settings().with_overrides({"trigger.max_batch_records": 500})


def test_processing_max_runtime_is_capped_so_the_infer_build_can_wait_for_it():
    assert PROCESSING_MAX_RUNTIME_LIMIT_SECONDS == (CODEBUILD_MAX_TIMEOUT_MINUTES - PROCESSING_WAIT_MARGIN_MINUTES) * 60
    at_limit = parse_settings({"inference": {"processing_max_runtime_seconds": PROCESSING_MAX_RUNTIME_LIMIT_SECONDS}})
    assert at_limit.inference.processing_max_runtime_seconds == 126000
    with pytest.raises(SettingsError) as exc:
        parse_settings({"inference": {"processing_max_runtime_seconds": PROCESSING_MAX_RUNTIME_LIMIT_SECONDS + 1}})
    message = str(exc.value)
    assert message.startswith("settings.inference.processing_max_runtime_seconds")
    assert "at most 126000 s" in message and "2160 minutes" in message
    # SageMaker's own maximum (5 days), the former bound, is refused too
    with pytest.raises(SettingsError, match="processing_max_runtime_seconds"):
        parse_settings({"inference": {"processing_max_runtime_seconds": 432000}})
    assert Settings().inference.processing_max_runtime_seconds == 21600
