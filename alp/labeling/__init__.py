"""Human labeling: Ground Truth task models, consolidation, labeling-job backends and the label step.

Kept import-light on purpose: the Lambda asset ships ``alp/`` with pydantic only, so the modules the two
Ground Truth handlers import (``tasks``, ``consolidation``) use the stdlib, pydantic and the core contracts;
``render`` (python-liquid), ``local`` and ``ground_truth`` are imported by the label step only.
"""
