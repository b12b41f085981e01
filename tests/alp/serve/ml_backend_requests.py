"""Request bodies exactly as Label Studio 1.23 sends them to an ML backend, recorded from its source.

Where each shape comes from (label-studio 1.23.2, ``label_studio/``):

* ``/setup``: ``ml/api_connector.py`` ``MLApi.setup``: ``project`` is ``_create_project_uid`` (``"<id>.<created_at
  timestamp>"``), ``schema`` the project's label config, ``hostname`` ``settings.HOSTNAME`` or
  ``"http://localhost:" + settings.INTERNAL_PORT``, ``access_token`` ``project.created_by.auth_token.key``,
  ``extra_params`` the backend's (None unless set). Sent when a model is connected (``ml/serializers.py``
  ``_validate_setup``) and before every prediction batch (``ml/models.py`` ``MLBackend.update_state``).
* ``/predict``: ``ml/api_connector.py`` ``MLApi._prep_prediction_req``: ``tasks``, ``project``, ``label_config``,
  ``params: {login, password, context}`` (no ``model_version`` any more). A batch's tasks are
  ``tasks/serializers.py`` ``TaskSimpleSerializer`` (every Task field but ``precomputed_agreement`` and
  ``allow_skip``, with ``annotations`` and ``predictions`` in full); an interactive request
  (``ml/models.py`` ``MLBackend.interactive_annotating``) has one task of
  ``data_export/serializers.py`` ``BaseExportDataSerializerForInteractive`` with drafts, predictions and annotations
  expanded, and ``context`` as the labeling UI posted it to ``/api/ml/<id>/interactive-annotating``
  (``{"result": [regions just drawn]}``; the regions' fields are those the ML backend examples read:
  ``label_studio_ml/examples/segment_anything_2_image/model.py`` in HumanSignal/label-studio-ml-backend).
* ``/webhook``: ``webhooks/utils.py`` ``run_webhook_sync``: ``{"action": ..., **payload}``; the webhook is made by
  ``ml/models.py`` ``create_ml_webhook`` for every action; "Start training" sends ``START_TRAINING`` with the
  project (``ml/api_connector.py`` ``MLApi.train`` under the flag ``ff_back_dev_1417...``, on in 1.23).
* ``/train`` (flag off): ``{"annotations": [...], "project", "label_config", "params": {login, password}}``.
"""

from __future__ import annotations

from typing import Any

PROJECT_UID = "7.1764892800"  # "<project id>.<int(project.created_at.timestamp())>"
HOSTNAME = "http://localhost:8080"  # settings.HOSTNAME unset: "http://localhost:" + INTERNAL_PORT


def setup_body(label_config: str, *, hostname: str = HOSTNAME, access_token: str = "0" * 40,
               project: str = PROJECT_UID) -> dict[str, Any]:
    return {"project": project, "schema": label_config, "hostname": hostname, "access_token": access_token,
            "extra_params": None}


def simple_task(task_id: int, data: dict[str, Any], *, predictions: list[dict[str, Any]] | None = None,
                project: int = 7) -> dict[str, Any]:
    """A task as ``TaskSimpleSerializer`` writes it."""
    return {
        "id": task_id, "annotations": [], "predictions": predictions or [], "data": data, "meta": {},
        "created_at": "2026-12-05T10:00:00.000000Z", "updated_at": "2026-12-05T10:00:00.000000Z",
        "is_labeled": False, "overlap": 1, "inner_id": task_id, "total_annotations": 0, "cancelled_annotations": 0,
        "total_predictions": len(predictions or []), "comment_count": 0, "unresolved_comment_count": 0,
        "last_comment_updated_at": None, "project": project, "updated_by": None, "file_upload": None,
        "comment_authors": [],
    }


def interactive_task(task_id: int, data: dict[str, Any], *, project: int = 7) -> dict[str, Any]:
    """A task as ``BaseExportDataSerializerForInteractive`` writes it (drafts, predictions, annotations expanded)."""
    return {
        "id": task_id, "annotations": [], "file_upload": None, "drafts": [], "predictions": [], "data": data,
        "meta": {}, "created_at": "2026-12-05T10:00:00.000000Z", "updated_at": "2026-12-05T10:00:00.000000Z",
        "inner_id": task_id, "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0,
        "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": project,
        "updated_by": None, "comment_authors": [],
    }


def predict_body(tasks: list[dict[str, Any]], label_config: str, *, context: dict[str, Any] | None = None,
                 project: str = PROJECT_UID) -> dict[str, Any]:
    return {"tasks": tasks, "project": project, "label_config": label_config,
            "params": {"login": None, "password": None, "context": context}}


def drawn_rectangle(from_name: str, label: str, box_percent: tuple[float, float, float, float], *,
                    original: tuple[int, int], region_id: str = "Xk3bQ9rLmN") -> dict[str, Any]:
    """A box just drawn, as the labeling UI puts it in ``context.result``."""
    x, y, w, h = box_percent
    return {"original_width": original[0], "original_height": original[1], "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
            "id": region_id, "from_name": from_name, "to_name": "image", "type": "rectanglelabels",
            "origin": "manual"}


def drawn_keypoint(from_name: str, label: str, xy_percent: tuple[float, float], *,
                   original: tuple[int, int]) -> dict[str, Any]:
    return {"original_width": original[0], "original_height": original[1], "image_rotation": 0,
            "value": {"x": xy_percent[0], "y": xy_percent[1], "width": 0.6, "keypointlabels": [label]},
            "is_positive": True, "id": "Pq7sT2vW1z", "from_name": from_name, "to_name": "image",
            "type": "keypointlabels", "origin": "manual"}


def webhook_body(action: str, project_id: int = 7, label_config: str = "<View/>") -> dict[str, Any]:
    """A webhook as Label Studio posts it (the project as its webhook serializer writes it, abridged)."""
    body: dict[str, Any] = {"action": action,
                            "project": {"id": project_id, "title": "alp: person keypoints", "label_config": label_config}}
    if action.startswith("ANNOTATION"):
        body["annotation"] = {"id": 11, "result": [], "task": 1}
        body["task"] = {"id": 1, "data": {"image": "/data/upload/7/a.png"}}
    return body


def train_body(label_config: str, project: str = PROJECT_UID) -> dict[str, Any]:
    return {"annotations": [], "project": project, "label_config": label_config,
            "params": {"login": None, "password": None}}
