"""Label Studio's requests parse into our models; our two labeling configs (and only configs we can answer) are
understood; untrusted XML is refused before parsing."""

from __future__ import annotations

import pytest
from ml_backend_requests import (
    drawn_rectangle,
    interactive_task,
    predict_body,
    setup_body,
    simple_task,
)

from alp.schema import get_schema
from alp.serve.errors import ServeError
from alp.serve.protocol import PredictRequest, SetupRequest, parse_label_config, parse_model


def test_given_our_heads_config_then_the_head_control_and_the_image_field_are_found(heads_config):
    config = parse_label_config(heads_config)
    assert (config.image_name, config.data_key) == ("image", "image")
    assert config.heads is not None and (config.heads.name, config.heads.to_name, config.heads.label) == (
        "heads", "image", "head")
    assert config.keypoints is None


def test_given_our_keypoints_config_then_keypoints_visibility_and_person_are_found(keypoints_config):
    config = parse_label_config(keypoints_config)
    kp = config.keypoints
    assert config.heads is None and kp is not None
    assert (kp.name, kp.to_name, kp.visibility) == ("keypoints", "image", "visibility")
    assert kp.person is not None and (kp.person.name, kp.person.label) == ("person", "this person")
    assert kp.labels == get_schema("incabin17").names


def test_given_renamed_controls_and_another_data_field_then_their_names_are_used():
    config = parse_label_config(
        '<View><Image name="frame" value="$photo"/><RectangleLabels name="boxes" toName="frame">'
        '<Label value="Head"/></RectangleLabels></View>')
    assert config.data_key == "photo" and config.heads is not None and config.heads.name == "boxes"
    assert config.heads.label == "Head"


@pytest.mark.parametrize("xml, reason", [
    ('<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>',
     "config_unsupported"),
    ('<View><Text name="t" value="$text"/><RectangleLabels name="h" toName="t"><Label value="head"/>'
     "</RectangleLabels></View>", "config_unsupported"),  # a head label, but not on an Image
    ("<View><Image name='i' value='$image'>", "config_not_xml"),
    ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><View>&b;</View>',
     "config_refused"),
    ("<View>" + " " * 300_000 + "</View>", "config_too_large"),
])
def test_given_a_config_we_cannot_answer_for_then_400_with_the_reason(xml, reason):
    with pytest.raises(ServeError) as caught:
        parse_label_config(xml)
    assert caught.value.status == 400 and caught.value.reason == reason


def test_given_label_studios_setup_body_then_the_token_is_kept_secret(heads_config):
    req = parse_model(SetupRequest, setup_body(heads_config, access_token="abc123secret"))
    assert req.project_id == "7" and req.hostname == "http://localhost:8080"
    assert req.access_token is not None and req.access_token.get_secret_value() == "abc123secret"
    assert "abc123secret" not in repr(req) and "abc123secret" not in str(req.model_dump())


def test_given_label_studios_batch_and_interactive_bodies_then_they_parse(keypoints_config):
    batch = parse_model(PredictRequest, predict_body([simple_task(1, {"image": "a.png"}),
                                                      simple_task(2, {"image": "b.png"})], keypoints_config))
    assert [t.id for t in batch.tasks] == [1, 2] and batch.context is None and batch.project_id == "7"
    region = drawn_rectangle("person", "this person", (10, 10, 30, 60), original=(320, 256))
    interactive = parse_model(PredictRequest, predict_body([interactive_task(3, {"image": "a.png"})],
                                                           keypoints_config, context={"result": [region]}))
    assert interactive.context is not None and interactive.context.result[0].from_name == "person"


@pytest.mark.parametrize("body", [[], {"tasks": "nope"}, {"tasks": [{"id": 1}]}])
def test_given_a_body_not_shaped_like_label_studios_then_400_naming_the_field(body):
    with pytest.raises(ServeError) as caught:
        parse_model(PredictRequest, body)
    assert caught.value.status == 400 and caught.value.reason == "malformed_request"
