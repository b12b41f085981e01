"""Human labeling: Ground Truth task contracts, consolidation, labeling-job backends and the label step.

What the two Ground Truth Lambdas run (``contracts``, ``pre_annotation``, ``post_annotation``, ``answers``,
``consolidation``, ``worker_reports``) uses the stdlib, pydantic and the ``alp`` core only: the Lambda asset
ships without numpy. ``render`` (python-liquid), the backends (``backend``, ``backends``, ``ground_truth``,
``local``) and the label step (``workflow``) run outside the Lambdas.
"""
