"""One short round of the whole loop on the synthesized stack, each step under its own role.

Per variant: synthesize the stack for the rehearsal's settings (or read a given cdk.out), create it in a
fresh embedded AWS, assume every role, switch IAM enforcement on, then play the cloud:

- the uploader (a user allowed only ``s3:PutObject`` under the unlabeled prefix) uploads a batch;
- the batcher's event source mapping receives the events with the batcher's role, and the batcher's own
  handler runs with its role and its environment from the template;
- every pipeline execution the batcher or the Merge step starts (their ``StartPipelineExecution`` calls)
  runs stage by stage: each stage's CodeBuild project from the template gives the role, the environment and
  the buildspec, whose build commands run here with the pipeline's variables resolved;
- the local workforce acts as Ground Truth with the SageMaker role and invokes the pre/post Lambdas, which
  run with their own roles; a Processing job runs its instances with the role its request passes;
- the split human step (variant ``yolo``, round 0): the round's Label step leaves its batch waiting, as it does
  while people are at work, so the labeling pipeline's Merge and Requeue do nothing; then the completion
  trigger's handler runs with its role for Ground Truth's job event and for the scheduled check (each handed
  over only if the template's rule matches it), the completion pipeline it starts runs under its own build
  role (Label collects, Merge makes the dataset version and starts training, Requeue), and a second check
  starts nothing: one dataset version, one training run.

Round 0 is the cold start (everything to people, the first model trained and registered); round 1 judges
with that model, so the head detector (YOLO or Rekognition) and the Processing path are exercised.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alp import aws, storage
from alp.batching.plan import MANIFEST_NAME
from alp.cloudformation.embedded_stack import EmbeddedStack, create_stack
from alp.cloudformation.synth import stack_settings
from alp.cloudformation.template import StackTemplate, TemplateError
from alp.environment import patched_environ
from alp.rehearsal.calls import Scope
from alp.rehearsal.doubles import ProcessingDouble, RekognitionDouble
from alp.rehearsal.principals import Denial, Identity, PrincipalSwitch
from alp.resources import ResourceNames
from alp.settings import Settings
from alp.steps import BATCH_VARIABLE, LABEL_STEP

Variant = Literal["yolo", "rekognition", "processing"]
VARIANTS: tuple[Variant, ...] = ("yolo", "rekognition", "processing")
ACCOUNT = "123456789012"  # moto's default account
UPLOADER = "rehearsal-uploader"
# Images per round: the cold start's seed set, then a batch above the processing variant's threshold.
ROUND_IMAGES = (8, 6)
PROCESSING_THRESHOLD = 4
PROCESSING_INSTANCES = 2
COMPLETION_VARIANT: Variant = "yolo"  # the variant whose round 0 takes the split human step
LABEL_STAGE = LABEL_STEP.name


class RehearsalFailed(RuntimeError):
    """A step failed for a reason other than a denial (its log is named)."""


@dataclass
class StepRun:
    name: str
    seconds: float
    ok: bool


@dataclass
class VariantResult:
    variant: str
    cdk_out: str
    seconds: float = 0.0
    steps: list[StepRun] = field(default_factory=list)
    calls: dict[str, Any] = field(default_factory=dict)
    denied: list[Denial] = field(default_factory=list)
    error: str | None = None
    log: str = ""
    completion: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.denied and self.error is None

    def as_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "ok": self.ok, "cdk_out": self.cdk_out, "seconds": round(self.seconds, 1),
                "steps": [{"step": s.name, "seconds": round(s.seconds, 2), "ok": s.ok} for s in self.steps],
                "denied": [{"step": d.step, "role": d.role, "action": d.action, "resource": d.resource, "call": d.call}
                           for d in self.denied],
                "error": self.error, "log": self.log, "calls": self.calls,
                **({"completion": self.completion} if self.completion is not None else {})}


def project_version_arn(region: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:rekognition:{region}:{account}:project/alp-heads/version/alp-heads.v1/1700000000000"


def rehearsal_settings(variant: Variant, truth_uri: str, base: Settings | None = None, *,
                       rekognition_processing: bool = True) -> Settings:
    """The defaults (or ``base``, the settings a given stack was synthesized with) at rehearsal sizes."""
    base = base or Settings()
    overrides: dict[str, Any] = {
        "labeling.backend": "local", "labeling.local_truth_uri": truth_uri, "labeling.local_workers": 1,
        "labeling.gold_items_per_job": 0,
        "training.backend": "local", "training.imgsz": 64, "training.epochs": 1, "training.batch": 8,
        "training.validate_every_epoch": False, "training.int8_calibration_images": 4,
        "trigger.batching_window_seconds": 0,
    }
    if variant == "rekognition":
        overrides["inference.head_detector_backend"] = "rekognition-custom-labels"
        overrides["inference.rekognition_project_version_arn"] = (
            base.inference.rekognition_project_version_arn or project_version_arn(base.region))
    if variant == "processing":
        # with the Rekognition head detector where the stack allows it (the default rehearsal synthesizes it
        # so): the Processing instances then call Rekognition under the SageMaker role
        if rekognition_processing:
            overrides["inference.head_detector_backend"] = "rekognition-custom-labels"
            overrides["inference.rekognition_project_version_arn"] = (
                base.inference.rekognition_project_version_arn or project_version_arn(base.region))
        overrides["inference.processing_threshold_images"] = PROCESSING_THRESHOLD
        overrides["compute.processing_instance_count"] = PROCESSING_INSTANCES
    return base.with_overrides(overrides)


def synthesized_stack(variant: Variant) -> Path:
    """The cdk.out folder ``alp rehearse`` synthesizes for ``variant`` (cached)."""
    from alp.cloudformation.synth import synthesize_cached

    return synthesize_cached(stack_settings(rehearsal_settings(variant, "", checkout_settings())))


def checkout_settings() -> Settings:
    """The settings ``cdk deploy`` would use from this checkout (``cdk.json``), else the defaults."""
    from alp.cloudformation.synth import REPO_ROOT
    from alp.settings import settings_from_cdk_json

    cdk_json = REPO_ROOT / "cdk.json"
    return settings_from_cdk_json(cdk_json) if cdk_json.is_file() else Settings()


def variants_for(cdk_out: Path | None) -> tuple[list[Variant], dict[str, str]]:
    """The variants a stack can run, and why the others are skipped: a stack synthesized for the YOLO head
    detector has (rightly) no Rekognition grant, so its Rekognition variant would only show that."""
    if cdk_out is None:
        return list(VARIANTS), {}
    deployed = deployed_settings(cdk_out)
    if deployed is not None and deployed.inference.head_detector_backend != "rekognition-custom-labels":
        return [v for v in VARIANTS if v != "rekognition"], {
            "rekognition": f"{cdk_out} was synthesized for the {deployed.inference.head_detector_backend} head "
                           "detector (no Rekognition grants); synthesize with "
                           "-c alp:inference.head_detector_backend=rekognition-custom-labels to rehearse it"}
    return list(VARIANTS), {}


def deployed_settings(cdk_out: Path) -> Settings | None:
    """The settings a cdk.out folder's stack deploys (its settings asset), if it holds them."""
    from alp.settings import parse_settings

    for path in sorted(cdk_out.glob("asset.*/config/settings.json")):
        return parse_settings(json.loads(path.read_text()))
    return None


# --- the steps as CodePipeline and CodeBuild would run them --------------------------------------------
@dataclass(frozen=True)
class PipelineStart:
    pipeline: str
    variables: dict[str, str]
    execution_id: str


class PipelineStarts:
    """The ``StartPipelineExecution`` calls that went through, in order (the executions to run)."""

    def __init__(self) -> None:
        self.pending: list[PipelineStart] = []
        self._params: dict[str, Any] = {}

    def attach(self, service: str, client: Any) -> None:
        if service != "codepipeline":
            return

        def remember(params: dict[str, Any], **_: Any) -> None:
            self._params = dict(params)

        def started(parsed: dict[str, Any], http_response: Any, **_: Any) -> None:
            if http_response.status_code == 200:
                variables = {v["name"]: v["value"] for v in self._params.get("variables", [])}
                self.pending.append(PipelineStart(self._params["name"], variables,
                                                  str(parsed.get("pipelineExecutionId") or uuid.uuid4())))

        client.meta.events.register("before-parameter-build.codepipeline.StartPipelineExecution", remember)
        client.meta.events.register("after-call.codepipeline.StartPipelineExecution", started)


_PIPELINE_VAR = re.compile(r"#\{(variables|codepipeline)\.([A-Za-z0-9_]+)\}")


def stage_environment(project_env: dict[str, str], action_env: dict[str, str], start: PipelineStart) -> dict[str, str]:
    """The build's environment: the project's variables, then the action's with CodePipeline's
    ``#{variables.X}`` and ``#{codepipeline.PipelineExecutionId}`` resolved for this execution."""
    def resolve(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) == "variables":
                return start.variables.get(m.group(2), "")
            return start.execution_id if m.group(2) == "PipelineExecutionId" else ""
        return _PIPELINE_VAR.sub(one, text)

    return {**project_env, **{k: resolve(v) for k, v in action_env.items()}}


def build_commands(buildspec: dict[str, Any]) -> list[list[str]]:
    """The buildspec's build-phase commands as ``alp`` argument lists (the install phase is CodeBuild's)."""
    out = []
    for command in buildspec.get("phases", {}).get("build", {}).get("commands", []):
        argv = shlex.split(command)
        if argv[:1] != ["alp"]:
            raise TemplateError(f"the rehearsal runs `alp ...` build commands only, not {command!r}")
        out.append(argv[1:])
    return out


def lambda_handler(spec: str) -> Any:
    """The handler the template names (``module.function``), loaded as a new execution environment loads it:
    the module imported afresh, so nothing it caches (its settings) carries over from another run."""
    import importlib

    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise TemplateError(f"Lambda handler {spec!r} is not <module>.<function>")
    sys.modules.pop(module_name, None)
    return getattr(importlib.import_module(module_name), function_name)


class LambdaContext:
    """The part of Lambda's context object the handlers read."""

    def __init__(self, arn: str, timeout_seconds: int) -> None:
        self.invoked_function_arn = arn
        self.function_name = arn.rsplit(":", 1)[-1]
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Rehearsal:
    """One variant's run: the embedded stack, the identities, and the round."""

    def __init__(self, variant: Variant, stack: EmbeddedStack, settings: Settings, names: ResourceNames,
                 switch: PrincipalSwitch, log_path: Path, images: list[Path]) -> None:
        self.variant, self.stack, self.settings, self.names = variant, stack, settings, names
        self.switch = switch
        self.log_path = log_path
        self.images = images
        self.starts = PipelineStarts()
        self.ran: list[PipelineStart] = []  # the executions run, in order
        self.steps: list[StepRun] = []
        self.waiting: tuple[str, str] | None = None  # (batch folder, job name) left waiting for people
        self.completion: dict[str, Any] | None = None

    # --- plumbing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _logged(self, title: str) -> Iterator[None]:
        import logging

        root_handlers = list(logging.getLogger().handlers)
        with self.log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            print(f"===== {title}", flush=True)
            try:
                yield
            finally:
                for handler in logging.getLogger().handlers:
                    if handler not in root_handlers:
                        logging.getLogger().removeHandler(handler)

    def _step(self, name: str, run: Any) -> None:
        t0 = time.monotonic()
        ok = False
        try:
            with self._logged(name):
                try:
                    rc = run()
                except Exception:
                    traceback.print_exc()
                    rc = 1
            ok = rc == 0
        finally:
            self.steps.append(StepRun(name, time.monotonic() - t0, ok))
        if not ok:
            denied = [d for d in self.switch.denied if d.step.startswith(name)]
            if denied:
                raise StepDenied(denied[0])
            raise RehearsalFailed(f"step {name} failed (exit code {rc}); its output is in {self.log_path}")

    # --- the round ---------------------------------------------------------------------------------
    def upload(self, names: Sequence[Path], broken: bool) -> int:
        uploader = self.switch.identities[UPLOADER]
        prefix = self.settings.storage.unlabeled_prefix
        count = 0
        with self.switch.acting_as(uploader, "upload"):
            s3 = aws.client("s3")
            for path in names:
                s3.put_object(Bucket=self.names.unlabeled_bucket, Key=f"{prefix}{path.name}", Body=path.read_bytes(),
                              ContentType="image/jpeg")
                count += 1
            if broken:
                s3.put_object(Bucket=self.names.unlabeled_bucket, Key=f"{prefix}broken-{len(names)}.jpg",
                              Body=b"not an image\n")
                count += 1
        return count

    def batch(self, expected: int) -> None:
        """The event source mapping (batcher's role) hands one window of events to the batcher handler."""
        from alp.machine.embedded import delete_records, receive_upload_records

        function = self.stack.functions[self.names.batcher_function]
        role = self.switch.identities[self.stack.roles[function.role].name]
        queue_url = self.stack.queue_for(function.name)
        records: list[dict[str, Any]] = []

        def receive() -> int:
            deadline = time.monotonic() + 30
            while len(records) < expected and time.monotonic() < deadline:
                records.extend(receive_upload_records(queue_url, wait_seconds=1))
            if len(records) < expected:
                print(f"only {len(records)} of {expected} upload events reached the queue")
                return 1
            return 0

        with self.switch.acting_as(role, "batcher event source"):
            self._step("batcher event source", receive)

        def invoke() -> int:
            handler = lambda_handler(function.handler)
            response = handler({"Records": records}, LambdaContext(function.arn, function.timeout_seconds))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            print(json.dumps(response))
            with self.switch.acting_as(role, "batcher event source"):
                delete_records(queue_url, records, failed)
            return 1 if failed else 0

        with self.switch.acting_as(role, f"lambda {function.name}", function.environment):
            self._step(f"lambda {function.name}", invoke)

    def run_pipelines(self, after_stage: Callable[[PipelineStart, str], None] | None = None) -> None:
        """Run every started execution to its end; executions they start run after them. ``after_stage`` is
        called after each stage (execution, stage name)."""
        while self.starts.pending:
            start = self.starts.pending.pop(0)
            self.ran.append(start)
            pipeline = self.stack.pipelines[start.pipeline]
            for stage in pipeline.stages:
                if stage.project is None:
                    continue  # the source stage: the rehearsal runs this checkout
                project = self.stack.projects[stage.project]
                identity = self.switch.identities[self.stack.roles[project.role].name]
                env = stage_environment(project.environment, stage.environment, start)
                step = f"{pipeline.name}/{stage.name}"
                for argv in build_commands(project.buildspec):
                    with self.switch.acting_as(identity, step, env):
                        self._step(step, lambda argv=argv: _cli(argv))
                if after_stage is not None:
                    after_stage(start, stage.name)

    def round(self, number: int) -> None:
        count = ROUND_IMAGES[number]
        start = sum(ROUND_IMAGES[:number])
        uploaded = self.upload(self.images[start:start + count], broken=number > 0)
        self.batch(uploaded)
        split = self.variant == COMPLETION_VARIANT and number == 0
        self.run_pipelines(self._leave_label_waiting if split else None)
        if split:
            self.complete_waiting_batch()

    # --- the split human step ----------------------------------------------------------------------
    def _build_identity(self, pipeline_name: str, stage_name: str) -> Identity:
        stage = next(s for s in self.stack.pipelines[pipeline_name].stages if s.name == stage_name)
        assert stage.project is not None
        return self.switch.identities[self.stack.roles[self.stack.projects[stage.project].role].name]

    def _leave_label_waiting(self, start: PipelineStart, stage: str) -> None:
        """After the round's Label stage: what the step writes when people are still at work on its first job
        (the batch's ``labeling.json`` says ``waiting`` on it, and the waiting index lists the batch), written
        under the Label step's role. The local workforce finished at once; people would not have."""
        if start.pipeline != self.names.labeling_pipeline or stage != LABEL_STAGE or self.waiting is not None:
            return
        from alp.labeling.waiting import record_outcome
        from alp.labeling.workflow import SUMMARY_FILE, LabelingSummary, labeling_dir, read_summary

        batch_dir = storage.parent(start.variables[BATCH_VARIABLE.name])
        step = f"{start.pipeline}/{LABEL_STAGE}: people still at work"

        def leave_waiting() -> int:
            done = read_summary(batch_dir)
            if done is None or not done.jobs:
                print(f"{batch_dir}: the Label step created no labeling job, so nothing can wait for people")
                return 1
            job = done.jobs[0].model_copy(update={"state": "InProgress", "labeled": 0, "unlabeled": 0})
            waiting = LabelingSummary(batch_dir=batch_dir, backend=done.backend, items=done.items,
                                      audit_items=done.audit_items, state="waiting", waiting_on=[job])
            storage.write_text(labeling_dir(batch_dir) + SUMMARY_FILE, waiting.model_dump_json(indent=2),
                               content_type="application/json")
            record_outcome(self.names.data_root, self.settings, waiting)
            self.waiting = (batch_dir, job.name)
            return 0

        with self.switch.acting_as(self._build_identity(start.pipeline, LABEL_STAGE), step):
            self._step(step, leave_waiting)

    def _trigger(self, rule_name: str, event: dict[str, Any], label: str) -> dict[str, Any]:
        """EventBridge's part: hand ``event`` to the completion function if the template's rule matches it and
        targets it; then Lambda's: run the template's handler with the function's role and environment."""
        function = self.stack.functions[self.names.completion_function]
        rule = self.stack.rules.get(rule_name)
        if rule is None or function.arn not in rule.targets:
            raise RehearsalFailed(f"no rule {rule_name} targets {function.name} in the template")
        if not rule.matches(event):
            raise RehearsalFailed(f"the rule {rule_name} does not match {label} event: {json.dumps(event)}")
        identity = self.switch.identities[self.stack.roles[function.role].name]
        step = f"lambda {function.name} ({label})"
        response: dict[str, Any] = {}

        def invoke() -> int:
            handler = lambda_handler(function.handler)
            response.update(handler(event, LambdaContext(function.arn, function.timeout_seconds)))
            print(json.dumps(response))
            return 0

        with self.switch.acting_as(identity, step, function.environment):
            self._step(step, invoke)
        return response

    def complete_waiting_batch(self) -> None:
        """Ground Truth's event for the job the batch waits on, and the scheduled check, each start the completion
        pipeline for it; both executions run (the second changes nothing); a second check starts nothing."""
        if self.waiting is None:
            raise RehearsalFailed("no batch was left waiting for people")
        batch_dir, job = self.waiting
        region, manifest = self.settings.region, batch_dir + MANIFEST_NAME
        ran_before = len(self.ran)
        job_event = _event("aws.sagemaker", "SageMaker Ground Truth Labeling Job State Change", region,
                           [f"arn:aws:sagemaker:{region}:{ACCOUNT}:labeling-job/{job}"], {"LabelingJobStatus": "Completed"})
        check_arn = f"arn:aws:events:{region}:{ACCOUNT}:rule/{self.names.waiting_check_rule}"
        started = {
            "labeling-job": self._trigger(self.names.labeling_job_state_rule, job_event, "labeling-job state change"),
            "schedule": self._trigger(self.names.waiting_check_rule,
                                      _event("aws.events", "Scheduled Event", region, [check_arn], {}), "scheduled check"),
        }
        for label, response in started.items():
            if [s["batch"] for s in response.get("started", [])] != [batch_dir]:
                raise RehearsalFailed(f"the {label} event started {response.get('started')}, not the completion "
                                      f"pipeline for {batch_dir}")
        starts = [p for p in self.starts.pending if p.pipeline == self.names.labeling_completion_pipeline]
        if len(starts) != 2 or any(p.variables != {BATCH_VARIABLE.name: manifest} for p in starts):
            raise RehearsalFailed(f"expected two completion executions for {manifest}, got {starts}")
        self.run_pipelines()
        after = self._trigger(self.names.waiting_check_rule,
                              _event("aws.events", "Scheduled Event", region, [check_arn], {}), "check after")
        if after.get("started"):
            raise RehearsalFailed(f"a check after completion started {after['started']}")
        ran = self.ran[ran_before:]
        self.completion = {
            "batch": batch_dir, "job": job,
            "started": {label: len(r.get("started", [])) for label, r in started.items()},
            "started_after_completion": len(after.get("started", [])),
            "executions": [p.pipeline for p in ran],
        }

    def verify_completion(self) -> str | None:
        """Exactly once: one dataset version added the batch and one training run followed (read after the
        rounds, outside the rehearsed roles); None when so, else what went wrong."""
        if self.completion is None:
            return "the split human step did not run"
        from alp.datasets import list_versions, read_version_info

        batch = storage.basename(self.completion["batch"])
        # versions are cumulative: count those the batch was added by
        versions = [uri for uri in list_versions(self.names.data_root, self.settings)
                    if read_version_info(uri).added_from.get("batch") == batch]
        trainings = self.completion["executions"].count(self.names.training_pipeline)
        self.completion.update(dataset_versions=len(versions), training_runs=trainings)
        if len(versions) != 1 or trainings != 1:
            return (f"the split human step was not exactly once: {len(versions)} dataset versions added {batch}, "
                    f"{trainings} training runs followed")
        return None


def _event(source: str, detail_type: str, region: str, resources: list[str], detail: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge event as a rule's target receives it."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source, "account": ACCOUNT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": region, "resources": resources,
            "detail": detail}


class StepDenied(RuntimeError):
    def __init__(self, denial: Denial) -> None:
        super().__init__(str(denial))
        self.denial = denial


def _cli(argv: list[str]) -> int:
    from alp.cli import main

    return main(argv)


# --- one variant -------------------------------------------------------------------------------------
def _moto_enforcement(initial_free_calls: float) -> None:
    """Switch moto's IAM enforcement on (0 free calls) or off (infinitely many) in this process, where the
    embedded AWS runs (what moto's ``/moto-api/reset-auth`` does, without depending on its form parsing)."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = initial_free_calls
    ActionAuthenticatorMixin.request_count = 0


def uploader_statements(names: ResourceNames, prefix: str) -> list[dict[str, Any]]:
    return [{"Effect": "Allow", "Action": "s3:PutObject",
             "Resource": f"arn:aws:s3:::{names.unlabeled_bucket}/{prefix}*"}]


def run_variant(variant: Variant, work_dir: Path, images: list[Path], truth_uri: str, *,
                cdk_out: Path | None = None, rounds: int = 2) -> VariantResult:
    from alp.cloudformation.synth import synthesize_cached
    from alp.machine.embedded import EmbeddedAws, aws_environment
    from alp.settings import SETTINGS_ENV
    from alp.steps import DATA_ROOT_ENV

    t0 = time.monotonic()
    base = deployed_settings(cdk_out) if cdk_out else checkout_settings()
    # a given stack's Processing path runs with the head detector it was synthesized for
    rekognition_processing = cdk_out is None or (
        base is not None and base.inference.head_detector_backend == "rekognition-custom-labels")
    settings = rehearsal_settings(variant, truth_uri, base, rekognition_processing=rekognition_processing)
    folder = cdk_out or synthesize_cached(stack_settings(settings))
    result = VariantResult(variant=variant, cdk_out=str(folder))
    log_path = work_dir / f"{variant}.log"
    log_path.write_text("")
    result.log = str(log_path)
    server = EmbeddedAws.start()
    switch: PrincipalSwitch | None = None
    try:
        with aws_environment(server.endpoint, settings.region), patched_environ({SETTINGS_ENV: None, DATA_ROOT_ENV: None}):
            names = ResourceNames.from_settings(settings, ACCOUNT)
            template = StackTemplate.load(folder, account=ACCOUNT, region=settings.region)
            stack = create_stack(template)
            # the settings in effect: those the stack deployed, at the rehearsal's sizes (as an operator would
            # change them); written before IAM enforcement starts
            storage.write_text(storage.join(names.data_root, settings.storage.config_key), settings.to_json())
            switch = PrincipalSwitch(stack, Scope(account=ACCOUNT, region=settings.region))
            switch.assume_roles()
            switch.add_user(UPLOADER, uploader_statements(names, settings.storage.unlabeled_prefix))
            rehearsal = Rehearsal(variant, stack, settings, names, switch, log_path, images)
            switch.install()
            aws.add_client_observer(rehearsal.starts.attach)
            doubles: list[Any] = []
            if settings.inference.head_detector_backend == "rekognition-custom-labels":
                version = settings.inference.rekognition_project_version_arn
                assert version is not None
                doubles.append(RekognitionDouble(version))
            doubles.append(ProcessingDouble(switch, _cli))
            for double in doubles:
                aws.add_client_observer(double.attach)
            _moto_enforcement(0)
            try:
                for number in range(rounds):
                    rehearsal.round(number)
            except StepDenied:
                pass  # reported from switch.denied
            except (RehearsalFailed, TemplateError) as exc:
                result.error = str(exc)
            finally:
                _moto_enforcement(float("inf"))
                for double in doubles:
                    aws.remove_client_observer(double.attach)
                aws.remove_client_observer(rehearsal.starts.attach)
                switch.uninstall()
            if variant == "processing" and not any(isinstance(d, ProcessingDouble) and d.jobs for d in doubles) \
                    and result.error is None and not switch.denied:
                result.error = "the batch did not take the Processing path"
            if variant == "rekognition" and not any(isinstance(d, RekognitionDouble) and d.calls for d in doubles) \
                    and result.error is None and not switch.denied:
                result.error = "no Rekognition call was made"
            if variant == COMPLETION_VARIANT and result.error is None and not switch.denied:
                result.error = rehearsal.verify_completion()
            result.completion = rehearsal.completion
            result.steps = rehearsal.steps
            result.denied = list(switch.denied)
            result.calls = {step: calls.as_json() for step, calls in switch.steps.items()}
    finally:
        server.stop()
        aws.reset_clients()
    result.seconds = time.monotonic() - t0
    return result


# --- the whole rehearsal ----------------------------------------------------------------------------------
@dataclass
class RehearsalResult:
    variants: list[VariantResult]
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.variants)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 1), "skipped": self.skipped,
                "denied": [d for v in self.variants for d in v.as_json()["denied"]],
                "variants": {v.variant: v.as_json() for v in self.variants}}


def prepare_images(work_dir: Path) -> tuple[list[Path], str]:
    """Synthetic in-cabin images and their truth manifest (the local workforce's answers)."""
    from alp.manifest import ManifestLine
    from alp.synth import generate_dataset

    manifest = generate_dataset(str(work_dir / "images"), sum(ROUND_IMAGES), seed=7, size=(128, 96), progress=False)
    images = [Path(ManifestLine.parse(t).source_ref) for t in storage.iter_lines(manifest)]
    return images, manifest


def run_rehearsal(work_dir: Path, *, variants: Sequence[Variant] | None = None, cdk_out: Path | None = None,
                  rounds: int = 2, say: Any = None) -> RehearsalResult:
    """Every variant (default: those the stack can run) on a fresh embedded AWS each."""
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    skipped: dict[str, str] = {}
    if variants is None:
        variants, skipped = variants_for(cdk_out)
    for variant, why in skipped.items():
        say(f"rehearsal [{variant}]: skipped: {why}")
    t0 = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    images, truth = prepare_images(work_dir)
    results = []
    for variant in variants:
        say(f"rehearsal [{variant}]: the stack {'from ' + str(cdk_out) if cdk_out else 'as synthesized'}, "
            f"{rounds} round(s), IAM enforced")
        result = run_variant(variant, work_dir, images, truth, cdk_out=cdk_out, rounds=rounds)
        results.append(result)
        state = "ok" if result.ok else ("DENIED: " + "; ".join(map(str, result.denied)) if result.denied
                                         else f"FAILED: {result.error}")
        say(f"rehearsal [{variant}]: {sum(s.ok for s in result.steps)} steps ran in {result.seconds:.0f}s: {state}")
    return RehearsalResult(results, time.monotonic() - t0, skipped)
