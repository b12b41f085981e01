"""Label Studio's ML backend protocol as typed models, and the labeling config parsed into what we answer for.

The shapes are the ones Label Studio 1.23 sends (``label_studio/ml/api_connector.py``: ``MLApi.setup``,
``_prep_prediction_req``; ``label_studio/ml/models.py``: ``MLBackend.interactive_annotating``) and reads back
(``MLBackend._get_predictions_from_ml_backend``: ``results``, one per task in order, each with ``result``,
``score`` and ``model_version``). Every request model ignores fields it does not use, so a newer Label Studio that
adds one still parses; tokens and passwords are :class:`~pydantic.SecretStr` so no log or repr shows them.

A labeling config is untrusted XML: it is refused when it declares a DOCTYPE (the only place entities can be
defined) or is larger than :data:`MAX_CONFIG_CHARS`, then parsed with the standard library.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree  # a DOCTYPE (so any entity) is refused before parsing  # nosec B405

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from alp.serve.errors import ServeError

MAX_CONFIG_CHARS = 200_000
HEAD_LABEL = "head"
OCCLUDED = "occluded"
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _project_key(value: Any) -> str:
    """Label Studio names a project ``"<id>.<created-at timestamp>"``; the id is what we remember it by."""
    return str(value).split(".", 1)[0] if value is not None else ""


class SetupRequest(_Incoming):
    """``POST /setup``: sent when a model is connected and before every batch of predictions."""

    project: str
    label_config: str = Field(alias="schema")
    hostname: str = ""  # Label Studio's own URL (its HOST setting, else http://localhost:<port>)
    access_token: SecretStr | None = None  # the project creator's API token (a legacy token)
    extra_params: dict[str, Any] | None = None

    @field_validator("project", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return str(value)

    @property
    def project_id(self) -> str:
        return _project_key(self.project)


class ContextRegion(_Incoming):
    """One region the annotator just drew, as the labeling UI serializes it (``context.result[i]``)."""

    id: str | None = None
    from_name: str
    to_name: str
    type: str
    value: dict[str, Any]
    original_width: float | None = None
    original_height: float | None = None


class InteractiveContext(_Incoming):
    result: list[ContextRegion] = Field(default_factory=list)


class PredictParams(_Incoming):
    login: str | None = None  # the project's task data credentials (not used: images come by the rules in images.py)
    password: SecretStr | None = None
    context: InteractiveContext | None = None


class StudioTask(_Incoming):
    """A task as Label Studio serializes it for its ML backend (``TaskSimpleSerializer``; interactive requests use
    the export serializer with predictions, annotations and drafts expanded)."""

    id: int | None = None
    data: dict[str, Any]
    predictions: list[Any] = Field(default_factory=list)


class PredictRequest(_Incoming):
    """``POST /predict``: a batch of tasks (Data Manager's "Retrieve predictions", a task opened without
    predictions) or one task with ``params.context`` (interactive assist)."""

    tasks: list[StudioTask]
    project: str | None = None
    label_config: str | None = None
    params: PredictParams | None = None

    @field_validator("project", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str | None:
        return None if value is None else str(value)

    @property
    def project_id(self) -> str:
        return _project_key(self.project)

    @property
    def context(self) -> InteractiveContext | None:
        ctx = self.params.context if self.params is not None else None
        return ctx if ctx is not None and ctx.result else None


class WebhookRequest(_Incoming):
    """``POST /webhook``: every project event once a model is connected (Label Studio adds the webhook itself),
    and ``START_TRAINING`` from the model page."""

    action: str


class ApiRequest(_Incoming):
    """``POST /v1/predict`` with a JSON body (the other way is the image bytes themselves)."""

    image_url: str = Field(min_length=1)


class TaskPrediction(BaseModel):
    """One task's answer: what Label Studio stores as a prediction."""

    result: list[dict[str, Any]]
    score: float | None = None
    model_version: str | None = None
    error: str | None = Field(None, description="why this task has no result (a batch keeps its other tasks)")

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        if out["error"] is None:
            del out["error"]
        return out


class PredictResponse(BaseModel):
    results: list[TaskPrediction]
    model_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"results": [r.to_json() for r in self.results], "model_version": self.model_version}


def parse_model(model: type[_Incoming], payload: Any) -> Any:
    """Validate ``payload`` into ``model`` or refuse with 400 naming the first bad field."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise ServeError(400, "malformed_request", f"{where}: {e['msg']}") from None


# --- the labeling config ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoxControl:
    """A ``RectangleLabels`` control: its name, the Image it labels and the label we write."""

    name: str
    to_name: str
    label: str


@dataclass(frozen=True)
class KeypointControls:
    """A ``KeyPointLabels`` control, the per-region visibility ``Choices`` and the person ``RectangleLabels``."""

    name: str
    to_name: str
    labels: tuple[str, ...]
    visibility: str | None  # a perRegion Choices with an "occluded" choice
    person: BoxControl | None


@dataclass(frozen=True)
class LabelConfig:
    """What a labeling config asks of us: the Image (and its task data field) and the controls we can fill."""

    image_name: str
    data_key: str  # the task data field holding the image (``$image`` -> ``image``)
    heads: BoxControl | None
    keypoints: KeypointControls | None

    def summary(self) -> dict[str, Any]:
        return {"image": self.image_name, "data_field": self.data_key,
                "heads": self.heads.name if self.heads else None,
                "keypoints": self.keypoints.name if self.keypoints else None,
                "visibility": self.keypoints.visibility if self.keypoints else None,
                "person": self.keypoints.person.name if self.keypoints and self.keypoints.person else None}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _labels(element: ElementTree.Element) -> list[str]:
    return [str(child.get("value")) for child in element.iter() if _local(child.tag) == "label" and child.get("value")]


def _targets(element: ElementTree.Element, images: dict[str, str]) -> str | None:
    """The Image a control labels (``toName`` may list several names)."""
    for name in (element.get("toName") or "").split(","):
        if name.strip() in images:
            return name.strip()
    return None


@functools.lru_cache(maxsize=64)
def parse_label_config(text: str) -> LabelConfig:
    """The controls of ``text`` we answer for, or :class:`ServeError` 400 saying why we cannot.

    Recognised: a ``RectangleLabels`` with a ``head`` label (head boxes); a ``KeyPointLabels`` (keypoints), with a
    per-region ``Choices`` offering ``occluded`` (visibility) and another ``RectangleLabels`` (the person box). Each
    must label an ``Image`` whose value is a task field (``$name``); all of them the same Image.
    """
    if len(text) > MAX_CONFIG_CHARS:
        raise ServeError(400, "config_too_large", f"the labeling config has {len(text)} characters "
                                                  f"(at most {MAX_CONFIG_CHARS})")
    if _DECLARATION.search(text):
        raise ServeError(400, "config_refused", "the labeling config declares a DOCTYPE or ENTITY; "
                                                "Label Studio configs have neither")
    try:
        # no DOCTYPE, so no entity can be defined: what makes XML parsing unsafe is refused above
        root = ElementTree.fromstring(text)  # noqa: S314  # nosec B314
    except ElementTree.ParseError as exc:
        raise ServeError(400, "config_not_xml", f"the labeling config is not well-formed XML ({exc})") from None
    images: dict[str, str] = {}
    for el in root.iter():
        if _local(el.tag) == "image" and el.get("name"):
            value = el.get("value") or ""
            if value.startswith("$") and len(value) > 1:
                images[str(el.get("name"))] = value[1:]
    heads: BoxControl | None = None
    boxes: list[BoxControl] = []
    keypoint_el: ElementTree.Element | None = None
    visibility: str | None = None
    for el in root.iter():
        kind, name = _local(el.tag), el.get("name")
        target = _targets(el, images)
        if not name or target is None:
            continue
        if kind == "rectanglelabels":
            labels = _labels(el)
            head = next((v for v in labels if v.lower() == HEAD_LABEL), None)
            if head is not None and heads is None:
                heads = BoxControl(name=name, to_name=target, label=head)
            elif head is None and labels:
                boxes.append(BoxControl(name=name, to_name=target, label=labels[0]))
        elif kind == "keypointlabels" and keypoint_el is None:
            keypoint_el = el
        elif (kind == "choices" and visibility is None and (el.get("perRegion") or "").lower() == "true"
              and OCCLUDED in {c.get("value") for c in el.iter() if _local(c.tag) == "choice"}):
            visibility = name
    keypoints: KeypointControls | None = None
    if keypoint_el is not None:
        target = _targets(keypoint_el, images)
        assert target is not None
        person = next((b for b in boxes if b.to_name == target), None)
        keypoints = KeypointControls(name=str(keypoint_el.get("name")), to_name=target,
                                     labels=tuple(_labels(keypoint_el)), visibility=visibility, person=person)
    if heads is None and keypoints is None:
        raise ServeError(400, "config_unsupported",
                         "the labeling config has neither a RectangleLabels with a 'head' label nor a KeyPointLabels "
                         "on an Image whose value is a task field ($image): this service suggests head boxes and "
                         "body keypoints only")
    used = {c.to_name for c in (heads, keypoints) if c is not None}
    if len(used) > 1:
        raise ServeError(400, "config_unsupported", f"the head boxes and the keypoints label different images "
                                                    f"({sorted(used)}); this service answers for one image per task")
    image = used.pop()
    return LabelConfig(image_name=image, data_key=images[image], heads=heads, keypoints=keypoints)
