"""A live Label Studio with the suggestion service set as its model: the prefill of tasks imported without one
comes from the service.

The session's Label Studio (tests/studio_fixtures.py) gets a project of each of our two kinds, tasks with two real
photos (in the moto bucket it reads images from) and no predictions; the service (``alp serve``'s app, on
127.0.0.1) serves the zero-shot bundle. Connecting the model is the API call behind Settings -> Model -> Connect
model (Label Studio then calls /health and /setup); "Retrieve predictions" is the Data Manager action that makes
Label Studio call /predict. Each task then holds the service's prediction: head boxes, or persons with points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ultralytics
from studio_builders import UNLABELED

from alp import aws
from alp.labeling.label_studio import LabelStudioBackend
from alp.schema import INCABIN17
from alp.settings import Settings
from alp.studio import configs
from alp.studio.client import StudioClient

ASSETS = Path(ultralytics.__file__).parent / "assets"
PHOTOS = ("bus.jpg", "zidane.jpg")


@pytest.fixture(scope="module")
def zero_shot_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.zero_shot import build_zero_shot_bundle

    work = tmp_path_factory.mktemp("zero-shot")
    return build_zero_shot_bundle(work, INCABIN17, imgsz=640, config_dir=work / "ultralytics")


def _predictions(client: StudioClient, project: int) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for task in client.tasks(project):
        body = client.request("GET", f"/api/tasks/{task.id}/", params={"fields": "all"})
        out[str(task.data["title"])] = body.get("predictions") or []
    return out


@pytest.mark.parametrize("kind", ["head-boxes", "keypoints"])
def test_label_studio_takes_its_prefill_from_the_service(kind: str, studio_server: Any, studio_aws: str,
                                                         zero_shot_bundle: Path) -> None:
    from alp.serve.app import create_app, running

    prefix = f"incoming/suggest-{kind}/"
    for name in PHOTOS:
        aws.client("s3").put_object(Bucket=UNLABELED, Key=prefix + name, Body=(ASSETS / name).read_bytes())
    settings = Settings().with_overrides({"storage.unlabeled_prefix": prefix,
                                          "serve.allowed_hosts": [f"s3://{UNLABELED}"]})
    connection = studio_server.connection
    backend = LabelStudioBackend(settings, connection=connection)
    with connection.client() as client:
        project = client.create_project(f"suggestions {kind}", configs.label_config(kind, INCABIN17)).id
        backend.ensure_image_storage(project, f"s3://{UNLABELED}/{prefix}")
        client.import_tasks(project, [{"data": {"image": f"s3://{UNLABELED}/{prefix}{name}", "title": name,
                                                "reason_text": "no proposal yet: ask the model"}} for name in PHOTOS])
        assert all(not found for found in _predictions(client, project).values())

        with running(create_app(settings, bundle_uri=str(zero_shot_bundle))) as url:
            client.request("POST", "/api/ml/", json={"url": url, "project": project, "title": "alp serve"})
            # Connecting made the model the project's live model (its title as the project's model version);
            # with "use predictions to prelabel" on, the task an annotator opens next is prefilled by the service.
            client.update_project(project, show_collab_predictions=True)
            assert client.request("GET", f"/api/projects/{project}/")["model_version"] == "alp serve"
            opened = client.request("GET", f"/api/projects/{project}/next")
            assert opened["predictions"], "the task an annotator opens is not prefilled by the service"
            # "Retrieve predictions" in the Data Manager: every task's prediction from the service
            client.request("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                           json={"selectedItems": {"all": True, "excluded": []}})
            found = _predictions(client, project)

    bundle_id = json.loads((zero_shot_bundle / "bundle.json").read_text())["bundle_id"]
    for name in PHOTOS:
        assert len(found[name]) == 1, f"{name}: {found[name]}"
        prediction = found[name][0]
        assert bundle_id in str(prediction.get("model_version")), prediction
        result = prediction["result"]
        if kind == "head-boxes":
            heads = [r for r in result if r["type"] == "rectanglelabels"]
            assert len(heads) >= (3 if name == "bus.jpg" else 2), result
        else:
            points = [r for r in result if r["type"] == "keypointlabels"]
            assert len(points) >= 10, result  # a person's visible points, at least
