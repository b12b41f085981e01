"""An annotator in a real browser: headless Chromium (Debian's package, driven by Playwright; no browser is
downloaded) logs in to a real Label Studio, opens a keypoint task, sees the model's points prefilled, drags one,
marks another occluded and submits; the dataset version then holds exactly that change.

A screenshot of the task view (before Submit, the points visible) is saved as a test artifact:
``$ALP_TEST_ARTIFACTS/label-studio-keypoint-task.png`` (else the test's ``tmp_path``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from studio_builders import DATA, UNLABELED, job_tasks, prediction_of, studio_batch, studio_settings, submit
from studio_fixtures import StudioServer

from alp import storage
from alp.datasets import image_key, merge_batch_result, read_version
from alp.labeling.label_studio import PREDICTION_MODEL_VERSION, LabelStudioBackend
from alp.labeling.workflow import run_label_step

CHROMIUM_ENV = "ALP_CHROMIUM"
ARTIFACTS_ENV = "ALP_TEST_ARTIFACTS"
SCREENSHOT = "label-studio-keypoint-task.png"
DRAG_SCREEN_PX = (60.0, 40.0)  # the mouse's move, in screen pixels (signs chosen toward the image's centre)
IMAGE_LOADED = ("() => { const i = document.querySelector('img[alt=image]');"
                " return !!i && i.complete && i.naturalWidth > 0; }")
POINTS_DRAWN = "n => ((window.Konva && window.Konva.stages) || []).some(s => s.find('Circle').length >= n)"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (or ``$ALP_CHROMIUM``); checked before Label Studio starts, so a missing one fails fast."""
    path = os.environ.get(CHROMIUM_ENV, "/usr/bin/chromium")
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"no Chromium at {path} ({CHROMIUM_ENV}); `make browser` installs Debian's chromium package")
    return path


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _two_isolated_points(points: dict[str, dict[str, Any]], visible: list[str], width: float, height: float
                         ) -> tuple[str, str]:
    """Two points the model calls visible, each far from every other point, so that a press lands on that point
    alone (the face points crowd inside the outlined head box)."""
    def at(name: str) -> tuple[float, float]:
        value = points[name]["value"]
        return value["x"] * width / 100.0, value["y"] * height / 100.0

    def room(name: str) -> float:
        return min(math.dist(at(name), at(other)) for other in points if other != name)

    ranked = sorted(visible, key=room, reverse=True)
    assert len(ranked) >= 2 and room(ranked[1]) >= 12, f"the model's points are too crowded to press: {ranked}"
    return ranked[0], ranked[1]


def test_an_annotator_in_chromium_drags_a_point_and_marks_one_occluded_and_the_version_holds_it(
        chromium: str, studio_server: StudioServer, studio_aws: str, tmp_path: Path) -> None:
    """Given one image whose model's head box was accepted, when an annotator in Chromium opens the keypoint task,
    sees the model's points prefilled, drags one point, sets another to occluded and presses Submit, then the
    label step completes and the dataset version's person has the dragged point moved by the drag (in image
    pixels), the other point occluded, and everything else as the model proposed."""
    from playwright.sync_api import sync_playwright

    shot = _artifacts(tmp_path) / SCREENSHOT
    seen = f"(the task view as the annotator saw it: {shot})"
    settings = studio_settings("lsbrowser")
    batch_dir, _ = studio_batch("ls-browser", settings, images=1, persons=2)
    backend = LabelStudioBackend(settings, connection=studio_server.connection)
    client = backend.client

    first = run_label_step(batch_dir, settings, backend)
    assert first.state == "waiting" and first.waiting_on[0].kind == "head-boxes"
    (head_task,) = job_tasks(client, backend.project_id("head-boxes"), first.waiting_on[0].name)
    head_proposal = prediction_of(client, head_task)
    assert len(head_proposal) == 1, "the model proposes one of the two heads"
    submit(client, head_task, head_proposal)  # accepted as proposed
    second = run_label_step(batch_dir, settings, backend)
    assert second.state == "waiting" and second.waiting_on[0].kind == "keypoints"
    project = backend.project_id("keypoints")
    (task,) = job_tasks(client, project, second.waiting_on[0].name)

    # Label Studio's labeling stream prefills only predictions of the project's model_version.
    body = client.request("GET", f"/api/tasks/{task.id}/", params={"fields": "all"})
    assert [p["model_version"] for p in body["predictions"]] == [PREDICTION_MODEL_VERSION]
    settings_of = client.request("GET", f"/api/projects/{project}/")
    assert settings_of["show_collab_predictions"] is True
    assert settings_of["model_version"] == PREDICTION_MODEL_VERSION

    proposal = prediction_of(client, task)
    points = {r["value"]["keypointlabels"][0]: r for r in proposal if r["from_name"] == "keypoints"}
    marked = {r["id"] for r in proposal if r["from_name"] == "visibility"}
    width, height = float(task.data["image_width"]), float(task.data["image_height"])
    drag, hide = _two_isolated_points(points, [n for n, r in points.items() if r["id"] not in marked], width, height)
    drag_value = points[drag]["value"]
    dx = DRAG_SCREEN_PX[0] if drag_value["x"] < 50 else -DRAG_SCREEN_PX[0]
    dy = DRAG_SCREEN_PX[1] if drag_value["y"] < 50 else -DRAG_SCREEN_PX[1]

    url, connection = studio_server.connection.url, studio_server.connection
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})  # the task view, choices included
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{url}/user/login")
            page.fill("input[name=email]", connection.username)
            page.fill("input[name=password]", connection.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/user/login" not in u)

            page.goto(f"{url}/projects/{project}/data?task={task.id}")
            page.wait_for_function(IMAGE_LOADED)  # presigned from the moto server by Label Studio
            page.wait_for_function(POINTS_DRAWN, arg=len(points))  # every proposed point drawn on the image
            page.locator(".lsf-outliner-item").nth(1).wait_for()  # and listed as regions (box first, then points)
            image = page.locator("img[alt=image]").bounding_box()  # where the image is drawn, zoom included
            assert image is not None
            scale = image["width"] / width  # screen pixels per image pixel
            assert image["height"] / height == pytest.approx(scale, rel=0.01)

            def on_screen(name: str) -> tuple[float, float]:
                value = points[name]["value"]
                return (image["x"] + value["x"] * image["width"] / 100.0,
                        image["y"] + value["y"] * image["height"] / 100.0)

            x, y = on_screen(drag)
            assert math.dist((x + dx, y + dy), on_screen(hide)) > 20, "the dragged point would land on the other one"
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + dx, y + dy, steps=8)
            page.mouse.up()

            page.mouse.click(*on_screen(hide))  # select the point: its visibility choices appear
            page.get_by_text(points[hide]["id"], exact=True).wait_for()  # the selected region's details
            page.locator("label.lsf-choice__checkbox", has=page.locator("input[name=occluded]")).click()
            page.locator("input[name=occluded]:checked").wait_for(state="attached")
            page.screenshot(path=str(shot))

            with page.expect_response(lambda r: r.request.method == "POST"
                                      and f"/api/tasks/{task.id}/annotations" in r.url) as posted:
                page.get_by_role("button", name="Submit").click()
            assert posted.value.ok, f"Label Studio refused the submitted annotation: {posted.value.status} {seen}"
        except Exception:
            page.screenshot(path=str(shot.with_name("label-studio-keypoint-task-failed.png")))
            raise
        finally:
            browser.close()

    final = run_label_step(batch_dir, settings, backend)
    assert final.state == "complete" and final.labeled == 1 and final.unlabeled == 0, seen
    version = merge_batch_result(batch_dir, settings, f"s3://{DATA}/")
    assert version.created
    (line,) = [ln for ln in read_version(version.uri) if image_key(ln) == "ls-browser-0.jpg"]
    assert storage.read_bytes(line.source_ref) == storage.read_bytes(f"s3://{UNLABELED}/incoming/ls-browser-0.jpg")
    boxes = line.boxes(settings.labeling.head_label_attribute)
    assert boxes is not None and len(boxes[0].annotations) == 1
    box, proposed_box = boxes[0].annotations[0], head_proposal[0]["value"]
    assert (box.left, box.top) == pytest.approx((proposed_box["x"] * width / 100, proposed_box["y"] * height / 100),
                                                abs=0.5), "the accepted head box"
    keypoints = line.keypoints(settings.labeling.keypoint_label_attribute)
    assert keypoints is not None and len(keypoints[0].persons) == 1
    person = {k.name: k for k in keypoints[0].persons[0].keypoints}

    def proposed(name: str) -> tuple[float, float]:
        value = points[name]["value"]
        return value["x"] * width / 100.0, value["y"] * height / 100.0

    moved = (person[drag].x - proposed(drag)[0], person[drag].y - proposed(drag)[1])
    assert moved == pytest.approx((dx / scale, dy / scale), abs=1.5), (
        f"{drag} should have moved by the drag, ({dx}, {dy}) screen px at {scale:.3f} screen px per image px, "
        f"but moved by {moved} image px {seen}")
    assert person[drag].v == 2, f"the dragged {drag} stays visible {seen}"
    assert person[hide].v == 1, f"{hide} was set to occluded in the browser {seen}"
    for name, k in person.items():
        if name == drag:
            continue
        if name not in points:
            assert k.v == 0, f"{name}: the model placed no point, so it is outside {seen}"
            continue
        want_v = 1 if name == hide or points[name]["id"] in marked else 2
        assert ((k.x, k.y), k.v) == (pytest.approx(proposed(name), abs=0.5), want_v), \
            f"{name} should be as the model proposed {seen}"
