"""The labeling backends by name: the one place that knows every implementation of
:class:`~alp.labeling.backend.LabelingBackend`."""

from __future__ import annotations

from typing import Any

from alp.labeling.backend import LabelingBackend
from alp.labeling.ground_truth import GroundTruthBackend
from alp.labeling.label_studio import LabelStudioBackend
from alp.labeling.local import LocalWorkforceBackend
from alp.settings import Settings


def get_backend(settings: Settings, **options: Any) -> LabelingBackend:
    """The backend named by ``settings.labeling.backend``."""
    if settings.labeling.backend == "ground-truth":
        return GroundTruthBackend(settings, **options)
    if settings.labeling.backend == "local":
        return LocalWorkforceBackend(settings, **options)
    if settings.labeling.backend == "label-studio":
        return LabelStudioBackend(settings, **options)
    raise ValueError(f"unknown labeling backend {settings.labeling.backend!r}")
