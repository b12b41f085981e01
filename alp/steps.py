"""The pipeline steps, declared once.

The CDK constructs render each step into a CodeBuild action of its CodePipeline (the buildspec runs
``alp steps run <pipeline> <step>``), and the local runner of the demo executes the same declaration in
process. Both end in :func:`run_step`, which renders the step's ``alp`` command line from the pipeline's
variables and calls the CLI: there is one code path per step, whichever runner drives it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from alp import storage


@dataclass(frozen=True)
class Variable:
    """A CodePipeline V2 variable; CodeBuild receives it as the environment variable ``env``."""

    name: str
    env: str
    description: str
    default: str = ""


@dataclass(frozen=True)
class Step:
    """One step: a CodeBuild action in the cloud, a function call locally."""

    name: str
    argv: tuple[str, ...]
    description: str
    timeout_minutes: int = 60
    needs_training_extras: bool = False


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    variables: tuple[Variable, ...]
    steps: tuple[Step, ...]
    derive: Callable[[dict[str, str]], dict[str, str]] = field(default=lambda v: {}, compare=False)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name.lower() == name.lower():
                return s
        raise KeyError(f"pipeline {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}")


DATA_ROOT_ENV = "ALP_DATA_ROOT"  # s3://<data bucket>/ in the cloud, a folder or moto bucket locally


def _labeling_derived(v: dict[str, str]) -> dict[str, str]:
    batch_dir = storage.parent(v["batch_manifest"])
    return {"batch_dir": batch_dir}


def _training_derived(v: dict[str, str]) -> dict[str, str]:
    from alp.settings import load_settings

    dataset = v["dataset"].rstrip("/") + "/"
    version = storage.basename(dataset)
    root = v.get("data_root") or os.environ.get(DATA_ROOT_ENV) or storage.parent(storage.parent(dataset))
    models_prefix = load_settings().storage.models_prefix
    return {"dataset": dataset, "candidate": storage.join(root, models_prefix, "candidates", version) + "/"}


INFER_STEP = Step("Infer", ("infer-batch", "--manifest", "{batch_manifest}", "--out", "{batch_dir}inference/"),
                  "Run the current approved bundle on every image; route auto / human / audit / quarantine")
# People's work takes hours or days: the Label step creates the jobs and ends, or collects them when people are
# done; it never waits inside a build. Merge and Requeue do nothing while the batch's labeling is waiting.
LABEL_STEP = Step("Label", ("label", "--batch", "{batch_dir}"),
                  "Create the labeling jobs for human and audit items, or collect them once people are done "
                  "(never waits for people)", timeout_minutes=30)
MERGE_STEP = Step("Merge", ("merge", "--batch", "{batch_dir}"),
                  "Merge human, audit and auto labels into a new immutable dataset version (once labeling is "
                  "complete)")
REQUEUE_STEP = Step("Requeue", ("requeue", "--batch", "{batch_dir}", "--json"),
                    "Send the images left unlabeled (failed labeling jobs, a spent human budget) back to the queue")
BATCH_VARIABLE = Variable("BatchManifestUri", "ALP_BATCH_MANIFEST_URI",
                          "s3:// URI of the batch manifest the batcher wrote")

LABELING_PIPELINE = PipelineSpec(
    name="labeling",
    description="Inference and judgement over an uploaded batch, labeling jobs for people, merge into a dataset "
                "version",
    variables=(BATCH_VARIABLE,),
    steps=(INFER_STEP, LABEL_STEP, MERGE_STEP, REQUEUE_STEP),
    derive=_labeling_derived,
)

# Started for a batch when its labeling job changes state (Ground Truth's event) or by the scheduled check of
# waiting batches (Label Studio): the same Label, Merge and Requeue steps, from where the batch stands.
LABELING_COMPLETION_PIPELINE = PipelineSpec(
    name="labeling-completion",
    description="When people finish a batch's labeling job: collect their labels, merge, requeue the rest",
    variables=(BATCH_VARIABLE,),
    steps=(LABEL_STEP, MERGE_STEP, REQUEUE_STEP),
    derive=_labeling_derived,
)

TRAINING_PIPELINE = PipelineSpec(
    name="training",
    description="Dataset version -> three models -> evaluation gate -> model registry",
    variables=(
        Variable("DatasetUri", "ALP_DATASET_URI", "s3:// URI of the dataset version folder (datasets/vNNNN/)"),
    ),
    steps=(
        Step("Prepare", ("prepare-training", "--dataset", "{dataset}", "--out", "{candidate}yolo/"),
             "Convert the dataset version into the three YOLO datasets", needs_training_extras=True),
        Step("Train", ("train", "--dataset", "{dataset}", "--prepared", "{candidate}yolo/", "--out",
                       "{candidate}bundle/"),
             "Train the head detector and both pose models (SageMaker training job in the cloud)",
             timeout_minutes=480, needs_training_extras=True),
        Step("Evaluate", ("evaluate-bundle", "--bundle", "{candidate}bundle/", "--dataset", "{dataset}",
                          "--report", "{candidate}report.json", "--json"),
             "Evaluate on the frozen test split and gate against the champion"),
        Step("Register", ("models", "register", "--bundle", "{candidate}bundle/", "--report",
                          "{candidate}report.json"),
             "Register the bundle as Approved or Rejected in the model package group"),
    ),
    derive=_training_derived,
)

PIPELINES: dict[str, PipelineSpec] = {p.name: p for p in (LABELING_PIPELINE, LABELING_COMPLETION_PIPELINE,
                                                           TRAINING_PIPELINE)}

_VAR_KEYS = {"BatchManifestUri": "batch_manifest", "DatasetUri": "dataset"}


def variables_from_env(spec: PipelineSpec, env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    out = {}
    for var in spec.variables:
        value = env.get(var.env, var.default)
        if not value:
            raise ValueError(f"pipeline variable {var.name} is not set (environment variable {var.env})")
        out[_VAR_KEYS.get(var.name, var.name)] = value
    return out


def render_argv(spec: PipelineSpec, step: Step, variables: Mapping[str, str]) -> list[str]:
    """The ``alp`` argument list of ``step`` for these variables."""
    values = dict(variables)
    values.update(spec.derive(values))
    try:
        return [part.format(**values) for part in step.argv]
    except KeyError as exc:
        raise ValueError(f"step {spec.name}/{step.name} needs variable {exc.args[0]!r}") from None


def run_step(pipeline: str, step_name: str, variables: Mapping[str, str],
             main: Callable[[Sequence[str]], int] | None = None) -> int:
    """Run one declared step through the CLI; returns its exit code."""
    spec = PIPELINES[pipeline]
    argv = render_argv(spec, spec.step(step_name), variables)
    if main is None:
        from alp.cli import main as cli_main

        main = cli_main
    return main(argv)


def run_pipeline(pipeline: str, variables: Mapping[str, str],
                 on_step: Callable[[Step], None] | None = None) -> None:
    """The local runner: every step of the declaration, in order; stops at the first failure."""
    spec = PIPELINES[pipeline]
    for step in spec.steps:
        if on_step:
            on_step(step)
        rc = run_step(pipeline, step.name, variables)
        if rc != 0:
            raise RuntimeError(f"step {pipeline}/{step.name} failed with exit code {rc}")
