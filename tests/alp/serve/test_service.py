"""The service over HTTP, called with the bodies Label Studio sends (``ml_backend_requests``): the protocol's answers,
the results' shapes, interactive assist, the JSON API, and every bad input answered 4xx with a reason while the
service keeps serving."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from bundle_factory import HEAD_BOX, PERSON_BOX
from ml_backend_requests import (
    drawn_keypoint,
    drawn_rectangle,
    interactive_task,
    predict_body,
    setup_body,
    simple_task,
    train_body,
    webhook_body,
)
from serve_fixtures import STUDIO_TOKEN

from alp.serve.assist import DrawnBox, crop_window, shift
from inference.image_io import DecodedImage

BUNDLE = "serve-scripted-v1"
W, H = 320, 256  # the scripted frames: the models' geometry maps 1:1 onto them


def pct_box(box: tuple[float, float, float, float], w: int = W, h: int = H) -> tuple[float, ...]:
    x1, y1, x2, y2 = box
    return (round(100 * x1 / w, 4), round(100 * y1 / h, 4), round(100 * (x2 - x1) / w, 4),
            round(100 * (y2 - y1) / h, 4))


def predict(served, tasks, config, **kw):
    return served.client.post("/predict", json=predict_body(tasks, config, **kw))


NO_SETUP = "100.1764892800"  # a project that never called /setup: no Label Studio host to resolve paths against


def assert_refused(response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason and body["error"].startswith(reason) and "Traceback" not in response.text


def assert_still_serving(served, heads_config) -> None:
    ok = predict(served, [simple_task(99, {"image": "bright.png"})], heads_config)
    assert ok.status_code == 200 and ok.json()["results"][0]["result"]


# --- health, setup, webhook, train ----------------------------------------------------------------------------------

def test_health_and_root_say_up_with_the_bundle_as_model_version(served):
    for path in ("/health", "/"):
        body = served.client.get(path).json()
        assert body["status"] == "UP" and body["model_version"] == BUNDLE and body["model_class"]
    assert served.client.get("/versions").json() == {"versions": [BUNDLE]}


def test_given_our_configs_when_setup_then_the_model_version_and_unsupported_configs_400(served, heads_config,
                                                                                          keypoints_config):
    for config in (heads_config, keypoints_config):
        r = served.client.post("/setup", json=setup_body(config))
        assert r.status_code == 200 and r.json() == {"model_version": BUNDLE}
    text_only = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="x"/></Choices></View>'
    assert_refused(served.client.post("/setup", json=setup_body(text_only)), 400, "config_unsupported")


def test_webhook_and_train_are_acknowledged_and_train_nothing(served, keypoints_config):
    for action in ("START_TRAINING", "ANNOTATION_CREATED", "PROJECT_UPDATED"):
        r = served.client.post("/webhook", json=webhook_body(action, label_config=keypoints_config))
        assert r.status_code == 200 and r.json()["action"] == action and "does not train" in r.json()["note"]
    r = served.client.post("/train", json=train_body(keypoints_config))
    assert r.status_code == 200 and r.json()["job"] is None
    assert_refused(served.client.post("/webhook", json={"project": {}}), 400, "malformed_request")


# --- predictions -----------------------------------------------------------------------------------------------------

def test_given_the_heads_config_then_head_boxes_in_percent_with_the_judgement_score(served, heads_config):
    tasks = [simple_task(1, {"image": "bright.png"}), simple_task(2, {"image": "dim.png"}),
             simple_task(3, {"image": "dark.png"})]
    r = predict(served, tasks, heads_config)
    assert r.status_code == 200
    bright, dim, dark = r.json()["results"]
    assert bright["model_version"] == BUNDLE and len(bright["result"]) == 1
    head = bright["result"][0]
    assert (head["from_name"], head["to_name"], head["type"]) == ("heads", "image", "rectanglelabels")
    assert (head["original_width"], head["original_height"]) == (W, H)
    value = head["value"]
    assert value["rectanglelabels"] == ["head"]
    assert (value["x"], value["y"], value["width"], value["height"]) == pytest.approx(pct_box(HEAD_BOX), abs=0.01)
    # a dim frame: the same geometry, weak confidences, a lower judgement score; a dark one: nothing found
    assert bright["score"] is not None and dim["score"] is not None and dim["score"] < bright["score"]
    assert dim["result"] and dark["result"] == [] and dark["model_version"] == BUNDLE


def test_given_the_keypoints_config_then_person_box_points_and_occluded_choices(served, keypoints_config):
    r = predict(served, [simple_task(1, {"image": "bright.png"})], keypoints_config)
    result = r.json()["results"][0]["result"]
    person = [x for x in result if x["from_name"] == "person"]
    points = [x for x in result if x["type"] == "keypointlabels"]
    choices = [x for x in result if x["type"] == "choices"]
    assert len(person) == 1 and person[0]["value"]["rectanglelabels"] == ["this person"]
    box = person[0]["value"]
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx(pct_box(PERSON_BOX), abs=0.01)
    assert len(points) == 17 and all(p["from_name"] == "keypoints" and p["to_name"] == "image" for p in points)
    # the scripted visible-only model doubts the last two points: occluded, each tied to its point by region id
    assert [c["value"]["choices"] for c in choices] == [["occluded"], ["occluded"]]
    by_id = {p["id"]: p["value"]["keypointlabels"][0] for p in points}
    assert sorted(by_id[c["id"]] for c in choices) == ["left_ankle", "right_ankle"]
    assert all(c["from_name"] == "visibility" for c in choices)


def test_given_a_keypoint_task_with_its_person_outlined_then_only_that_person(served, keypoints_config):
    outlined = {"model_version": "alp-model", "result": [
        {"id": "person", "from_name": "person", "to_name": "image", "type": "rectanglelabels", "readonly": True,
         "original_width": W, "original_height": H,
         "value": dict(zip(("x", "y", "width", "height"), pct_box(HEAD_BOX), strict=True),
                       rectanglelabels=["this person"])}]}
    r = predict(served, [simple_task(5, {"image": "bright.png"}, predictions=[outlined])], keypoints_config)
    result = r.json()["results"][0]["result"]
    assert sum(x["type"] == "keypointlabels" for x in result) == 17


def test_results_keep_the_task_order_of_a_batch(served, heads_config):
    names = ["bright.png", "dim.png", "wide.png", "bright.jpg"]
    r = predict(served, [simple_task(i, {"image": n}) for i, n in enumerate(names)], heads_config)
    widths = [x["result"][0]["original_width"] if x["result"] else None for x in r.json()["results"]]
    assert widths == [W, W, 640, W]


def test_given_label_studios_own_upload_url_then_its_token_goes_there_and_nowhere_else(
        served, file_host, heads_config, caplog):
    caplog.set_level(logging.DEBUG)
    project = "41.1764892800"
    setup = setup_body(heads_config, hostname=file_host.studio_url, access_token=STUDIO_TOKEN, project=project)
    assert served.client.post("/setup", json=setup).status_code == 200
    file_host.seen.clear()
    tasks = [simple_task(1, {"image": "/data/upload/7/bright.png"}),
             simple_task(2, {"image": f"{file_host.studio_url}/data/upload/7/dim.png"}),
             simple_task(3, {"image": "/data/upload/7/to-public.png"})]  # redirected to another origin
    r = served.client.post("/predict", json=predict_body(tasks, heads_config, project=project))
    assert r.status_code == 200 and all(x["result"] for x in r.json()["results"])
    assert ("/data/upload/7/bright.png", f"Token {STUDIO_TOKEN}") in file_host.seen
    assert ("/public/bright.png", None) in file_host.seen  # the redirect target got no token
    # a failing request with the token in play logs nothing that holds it
    bad = predict_body([simple_task(4, {"image": "/data/upload/7/not-an-image.png"})], heads_config, project=project)
    assert_refused(served.client.post("/predict", json=bad), 415, "not_an_image")
    logged = "\n".join(f"{rec.getMessage()} {rec.args}" for rec in caplog.records)
    assert caplog.records and STUDIO_TOKEN not in logged


# --- bad input: 4xx with a reason, and the next request is served -----------------------------------------------

@pytest.mark.parametrize("image, status, reason", [
    ("not-an-image.png", 415, "not_an_image"),
    ("truncated.jpg", 422, "truncated"),
    ("huge.png", 422, "too_many_pixels"),
    ("missing.png", 404, "image_not_found"),
    ("../secret.png", 403, "path_not_allowed"),
    ("/etc/passwd", 403, "path_not_allowed"),
    ("http://203.0.113.7/frame.png", 403, "host_not_allowed"),
    ("s3://not-allowed-bucket/frame.png", 403, "bucket_not_allowed"),
    ("gs://bucket/frame.png", 400, "unsupported_location"),
])
def test_given_a_bad_image_then_4xx_with_the_reason_and_the_service_keeps_serving(
        served, heads_config, image, status, reason):
    assert_refused(predict(served, [simple_task(1, {"image": image})], heads_config, project=NO_SETUP), status, reason)
    assert_still_serving(served, heads_config)


def test_given_hosts_outside_the_rules_or_too_many_bytes_then_refused(served, file_host, heads_config):
    cases = [
        (f"{file_host.studio_url}/public/bright.png", 403, "host_not_allowed"),  # localhost: not allowed, no /setup
        (f"{file_host.url}/redirect-out", 403, "host_not_allowed"),  # an allowed host sending us elsewhere
        (f"{file_host.url}/endless", 413, "image_too_large"),  # no Content-Length: the limit holds while streaming
    ]
    for url, status, reason in cases:
        assert_refused(predict(served, [simple_task(1, {"image": url})], heads_config), status, reason)
    ok = predict(served, [simple_task(1, {"image": f"{file_host.url}/public/bright.png"})], heads_config)
    assert ok.status_code == 200 and ok.json()["results"][0]["result"]


def test_given_malformed_json_or_a_task_without_the_image_field_then_400(served, heads_config):
    c = served.client
    assert_refused(c.post("/predict", content=b'{"tasks": [', headers={"content-type": "application/json"}),
                   400, "malformed_json")
    assert_refused(c.post("/predict", content=b"", headers={"content-type": "application/json"}), 400,
                   "malformed_json")
    assert_refused(c.post("/setup", json={"schema": heads_config}), 400, "malformed_request")
    assert_refused(predict(served, [simple_task(1, {"photo": "bright.png"})], heads_config), 400,
                   "missing_image_field")
    assert_refused(c.post("/predict", json={"tasks": [simple_task(1, {"image": "bright.png"})],
                                            "project": "999.1"}), 400, "no_label_config")
    assert_still_serving(served, heads_config)


def test_given_a_batch_with_one_bad_image_then_the_others_are_answered_and_the_bad_one_says_why(served, heads_config):
    r = predict(served, [simple_task(1, {"image": "bright.png"}), simple_task(2, {"image": "truncated.jpg"})],
                heads_config)
    good, bad = r.json()["results"]
    assert r.status_code == 200 and good["result"] and bad["result"] == [] and bad["error"].startswith("truncated")


# --- interactive assist ------------------------------------------------------------------------------------------

def _expected_crop_person(served, drawn: DrawnBox) -> np.ndarray:
    """What the engine says on the crop around ``drawn``, moved into the full frame: the keypoints to expect."""
    from PIL import Image

    holder = served.service.holder
    frame = np.asarray(Image.open(served.service.policy.image_root / "wide.png").convert("RGB"))
    x0, y0, x1, y1 = crop_window(drawn, frame.shape[1], frame.shape[0], 32)
    crop = DecodedImage(pixels=np.ascontiguousarray(frame[y0:y1, x0:x1]), format="PNG", original_mode="RGB",
                        exif_transposed=False)
    pred = shift(holder.current.engine.predict_decoded([crop])[0], x0, y0, frame.shape[1], frame.shape[0])
    return pred.persons[0].keypoints_xy


def test_given_a_person_box_just_drawn_then_that_persons_points_from_a_crop_in_full_frame_coordinates(
        served, keypoints_config):
    fw, fh = 640, 256  # wide.png: the person drawn on its right half
    box = (400.0, 20.0, 520.0, 230.0)
    region = drawn_rectangle("person", "this person", pct_box(box, fw, fh), original=(fw, fh))
    r = predict(served, [interactive_task(8, {"image": "wide.png"})], keypoints_config, context={"result": [region]})
    assert r.status_code == 200
    (answer,) = r.json()["results"]
    points = [x for x in answer["result"] if x["type"] == "keypointlabels"]
    assert answer["model_version"] == BUNDLE and answer["score"] is not None
    assert len(points) == 17 and not [x for x in answer["result"] if x["from_name"] == "person"]
    assert len({p["id"] for p in points}) == 17
    expected = _expected_crop_person(served, DrawnBox(kind="person", box=box))
    got = np.array([[p["value"]["x"] * fw / 100, p["value"]["y"] * fh / 100] for p in points])
    assert np.allclose(got, expected, atol=0.05)
    # the crop's points lie around the drawn person, not where the whole frame's model would put them
    assert got[:, 0].min() >= box[0] - 0.25 * (box[2] - box[0]) - 1


def test_given_an_interactive_request_without_a_box_then_an_empty_result(served, keypoints_config):
    point = drawn_keypoint("keypoints", "nose", (50, 20), original=(W, H))
    r = predict(served, [interactive_task(8, {"image": "bright.png"})], keypoints_config, context={"result": [point]})
    assert r.status_code == 200 and r.json()["results"] == [{"result": [], "score": None, "model_version": BUNDLE}]


# --- the JSON API ---------------------------------------------------------------------------------------------------

def test_v1_predict_by_url_and_by_bytes_gives_our_json(served, images, file_host):
    by_url = served.client.post("/v1/predict", json={"image_url": f"{file_host.url}/public/bright.png"})
    by_bytes = served.client.post("/v1/predict", content=images.bright, headers={"content-type": "image/png"})
    for r in (by_url, by_bytes):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["bundle_id"] == BUNDLE and (body["width"], body["height"]) == (W, H)
        assert body["route"] in ("auto", "human", "audit") and body["score"] is not None
        assert body["heads"][0]["box"] == pytest.approx(list(HEAD_BOX), abs=0.05)
        (person,) = body["persons"]
        assert person["head"] == 0 and len(person["keypoints"]) == 17
        assert [k["visibility"] for k in person["keypoints"]][-2:] == ["occluded", "occluded"]
    assert_refused(served.client.post("/v1/predict", content=b"GIF89a-not-really",
                                      headers={"content-type": "image/gif"}), 415, "not_an_image")
    assert_refused(served.client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}),
                   415, "unsupported_media_type")
    assert_refused(served.client.post("/v1/predict", json={"image": "bright.png"}), 400, "malformed_request")
    too_big = b"\x89PNG" + b"\x00" * (3_000_000)
    assert_refused(served.client.post("/v1/predict", content=too_big, headers={"content-type": "image/png"}),
                   413, "body_too_large")
