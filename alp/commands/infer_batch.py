"""``alp infer-batch``: run the approved bundle over a batch manifest and route every image.

In CodeBuild (the labeling pipeline's Infer step) small batches run in place; batches above
``inference.processing_threshold_images`` become a SageMaker Processing job whose instances each take a
shard, after which this command merges the shards. Inside the Processing container the same command
runs with ``--shard-index auto``.

Before any champion is approved the bundle may be the zero-shot one (``inference.zero_shot_bundle``): every image
then goes to people with its proposals, so there are no thresholds to learn, no audits to draw and no guarantee to
check.

The step is pure: the same batch manifest (by content), bundle (by id) and effective settings (the judgement with
the batch's audit seed and learned thresholds) route every image the same way. Its output folder records the
digest of those inputs (``inputs.json``, :mod:`alp.step_outputs`, written last), and a run that finds a complete
output of the same inputs returns it instead of computing it again: a retried stage neither repeats the work nor
starts a second Processing job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alp.audits import Guarantee
    from alp.bundle import BundleDescriptor
    from alp.settings import Settings
    from inference.runner import BatchSummary


def _shard(args: argparse.Namespace) -> tuple[int, int]:
    if args.shard_index == "auto":
        from inference.processing import shard_from_resource_config

        return shard_from_resource_config()
    return int(args.shard_index), int(args.shard_count)


def _role_arn(settings: object) -> str:
    from alp import aws
    from alp.resources import ResourceNames
    from alp.settings import Settings

    assert isinstance(settings, Settings)
    identity = aws.client("sts").get_caller_identity()
    account = identity["Account"]
    partition = str(identity["Arn"]).split(":")[1]  # aws, aws-cn, aws-us-gov: the caller's own partition
    names = ResourceNames.from_settings(settings, account)
    return f"arn:{partition}:iam::{account}:role/{names.sagemaker_role}"


@contextlib.contextmanager
def _head_model_held(settings: Settings, bundle_uri: str | None) -> Iterator[None]:
    """Around a Processing job: a Rekognition head model is started (if stopped) before the instances run
    and stopped after the last one (if it was started here and the settings do not keep it running)."""
    inf = settings.inference
    if bundle_uri is None or inf.head_detector_backend != "rekognition-custom-labels" \
            or not inf.rekognition_project_version_arn:
        yield
        return
    from inference.head_backends import RekognitionHeadDetector

    detector = RekognitionHeadDetector(inf.rekognition_project_version_arn, min_confidence=inf.box_conf_threshold,
                                       keep_running=inf.keep_rekognition_model_running)
    detector.open()
    try:
        yield
    finally:
        detector.close()


def _descriptor(bundle_uri: str | None) -> BundleDescriptor | None:
    """The bundle's ``bundle.json`` (None: cold start); the engine checks its files again when it loads them."""
    if bundle_uri is None:
        return None
    from alp import storage
    from alp.bundle import DESCRIPTOR_NAME, parse_descriptor

    return parse_descriptor(storage.read_text(storage.join(bundle_uri, DESCRIPTOR_NAME)))


def _guarantee_report(args: argparse.Namespace, settings: Settings, bundle_id: str | None) -> Guarantee | None:
    """What the audits of the bundle say about its auto-labels (None: no bundle whose labels are accepted)."""
    from alp import storage
    from alp.audits import bundle_guarantee
    from alp.datasets import data_root_for

    if bundle_id is None:
        return None
    return bundle_guarantee(data_root_for(storage.parent(args.manifest)), settings, bundle_id)


def _guarantee(args: argparse.Namespace, bundle_id: str | None, report: Guarantee | None
               ) -> tuple[dict[str, float], str | None]:
    """The audits' word on the bundle written beside the batch's outputs (``guarantee.json``): the metrics (the
    audited precision and its 95% lower bound), and the reason to pause auto-labeling when enough audits put the
    lower bound under the target (else None)."""
    from alp import storage

    if bundle_id is None or report is None:
        return {}, None
    storage.write_text(storage.join(args.out, "guarantee.json"), json.dumps(
        {"bundle_id": bundle_id, **report.as_json()}, indent=2, sort_keys=True) + "\n",
        content_type="application/json")
    if report.audits:
        verdict = {True: "holds", False: "does not hold", None: "too few audits"}[report.holds]
        print(f"infer-batch: audits of {bundle_id}: {report.agreed}/{report.audits} agreed, lower bound "
              f"{report.lower_bound} vs target {report.target} ({verdict})", file=sys.stderr)
    metrics = {"audits": float(report.audits), "auto_labeling_paused": float(report.holds is False)}
    if report.precision is not None and report.lower_bound is not None:
        metrics.update({"audited_precision": report.precision, "audited_precision_lower_bound": report.lower_bound})
    if report.holds is False:
        from inference.budget import PAUSED_REASON

        return metrics, PAUSED_REASON.format(lower=report.lower_bound, target=report.target)
    return metrics, None


def infer_inputs(manifest_sha256: str, bundle_id: str | None, zero_shot: bool, settings: Settings
                 ) -> dict[str, object]:
    """What a batch's routing is made from, and so what its Processing job computes: the batch, the bundle, the
    settings and the code that infers and judges."""
    from alp.step_outputs import code_sha256

    return {"manifest_sha256": manifest_sha256, "bundle_id": bundle_id, "zero_shot": zero_shot,
            "settings_sha256": settings.sha256(), "code_sha256": code_sha256("alp", "inference")}


def _judgement_for_batch(args: argparse.Namespace, settings: Settings, bundle_uri: str | None, *,
                         zero_shot: bool = False) -> Settings:
    """The judgement settings this batch runs with: the audit draw seeded by the batch (a re-run draws the same
    parts, a requeued part in a later batch may be drawn again), and the part score thresholds the bundle's
    audits support (``judgement.learn_thresholds``; not for a zero-shot bundle, which has no audits and whose
    images all go to people). Written to ``thresholds.json`` beside the outputs; passed to a Processing job's
    instances whole (``--judgement``), which cannot see the batch or the audits."""
    from alp import storage
    from alp.audits import bundle_thresholds
    from alp.bundle import parse_descriptor
    from alp.datasets import data_root_for

    if args.judgement:
        return settings.with_overrides({f"judgement.{k}": v for k, v in json.loads(args.judgement).items()})
    j = settings.judgement
    batch_dir = storage.parent(args.manifest)
    overrides: dict[str, object] = {"audit_seed": f"{j.audit_seed}/{storage.basename(batch_dir.rstrip('/'))}"}
    learned: dict[str, object] = {}
    bundle_id = None
    if bundle_uri is not None and j.learn_thresholds and not zero_shot:
        bundle_id = parse_descriptor(storage.read_text(storage.join(bundle_uri, "bundle.json"))).bundle_id
        for kind, found in bundle_thresholds(data_root_for(batch_dir), settings, bundle_id).items():
            learned[kind] = found.as_json()
            field = "heads_score_threshold" if kind == "heads" else "person_score_threshold"
            if found.threshold is not None and getattr(j, field) is None:  # a pinned threshold stays
                overrides[field] = found.threshold
    effective = settings.with_overrides({f"judgement.{k}": v for k, v in overrides.items()})
    e = effective.judgement
    # written with the outputs, once the batch is routed: a crashed step leaves no output behind
    args.thresholds_record = json.dumps({
        "bundle_id": bundle_id, "audit_seed": e.audit_seed, "learned": learned,
        "effective": {"box_threshold": e.box_threshold, "keypoint_threshold": e.keypoint_threshold,
                      "heads_score_threshold": e.heads_score_threshold,
                      "person_score_threshold": e.person_score_threshold},
    }, indent=2, sort_keys=True) + "\n"
    for kind, record in learned.items():
        print(f"infer-batch: {kind} score threshold from the audits of {bundle_id}: {record}", file=sys.stderr)
    args.judgement = json.dumps(overrides, sort_keys=True)
    return effective


def _part_shares(out: str) -> dict[str, float]:
    """``auto_share_heads`` / ``auto_share_persons`` of the batch's routed parts (after a pause or a budget)."""
    from alp import storage

    uri = storage.join(out, "summary.json")
    if not storage.exists(uri):  # a Processing instance: its shard's summary is under its shard folder
        return {}
    from alp.manifest import auto_share

    parts: dict[str, int] = json.loads(storage.read_text(uri)).get("parts") or {}
    shares = {kind: auto_share(parts, kind) for kind in ("heads", "persons")}
    return {f"auto_share_{kind}": share for kind, share in shares.items() if share is not None}


def _run_processing(args: argparse.Namespace, settings: Settings, bundle_uri: str | None, zero_shot: bool,
                    job_inputs: dict[str, object]) -> BatchSummary:
    """The batch on a Processing job: the job of these inputs found (waited for, or its shards merged) or started."""
    from alp import step_outputs, storage
    from alp.settings import SETTINGS_ENV
    from inference import processing

    batch_id = storage.basename(storage.parent(args.manifest))
    # where its shards go is part of what a job does: a run for another --out never takes this job's shards
    job_digest = step_outputs.digest({**job_inputs, "out": args.out})
    plan = processing.find_processing_job(
        lambda attempt: processing.processing_job_name(settings, batch_id, job_digest, attempt))

    def request_for(name: str) -> dict[str, object]:
        return processing.build_processing_request(
            settings, job_name=name, manifest_uri=args.manifest, out_uri=processing.job_output_uri(args.out, name),
            bundle_uri=bundle_uri, role_arn=_role_arn(settings), settings_uri=os.environ.get(SETTINGS_ENV),
            judgement=args.judgement,
        )

    # a job that completed needs no head model: its instances are done
    held = contextlib.nullcontext() if plan.action == "fetch" \
        else _head_model_held(settings, None if zero_shot else bundle_uri)  # zero-shot heads come from faces
    with held:
        processing.start_or_wait(plan, request_for, timeout_seconds=processing.processing_wait_seconds(settings))
    # the instance count is part of the settings the job's name digests: a job found by name ran with this many
    summary = processing.merge_shards(args.manifest, args.out, settings.compute.processing_instance_count,
                                      shards_uri=processing.job_output_uri(args.out, plan.name))
    return summary.model_copy(update={"zero_shot": zero_shot})


def _result_line(summary: BatchSummary, routes: dict[str, int], zero_shot: bool, budgeted: bool) -> str:
    which = f"zero-shot bundle {summary.bundle_id}: every image to people" if zero_shot \
        else f"bundle {summary.bundle_id or 'none: cold start'}"
    return f"infer-batch: {summary.invariant} ({which})" + (f"; within the human budget: {routes}" if budgeted else "")


def _print_result(args: argparse.Namespace, summary: BatchSummary, routes: dict[str, int], zero_shot: bool,
                  budgeted: bool) -> None:
    if args.json:  # one line, the only one on stdout (the metrics record goes to stderr)
        print(json.dumps({**summary.model_dump(mode="json"), "routes": routes}, sort_keys=True))
    else:
        print(_result_line(summary, routes, zero_shot, budgeted))


def _infer_batch(args: argparse.Namespace) -> int:
    from alp import step_outputs, storage
    from alp.manifest import ROUTES
    from alp.observability import emit_metrics
    from alp.settings import load_settings
    from alp.steps import LABELING_PIPELINE

    INFER_STEP = LABELING_PIPELINE.step("Infer").name
    from inference import processing
    from inference.runner import BatchSummary, resolve_bundle_uri, run_batch

    settings = load_settings()
    if args.head_model_held:
        # the Infer step that submitted this Processing job keeps the Rekognition model running for all its
        # instances: an instance that stopped it on finishing would cut off the others
        settings = settings.with_overrides({"inference.keep_rekognition_model_running": True})
    if args.merge_shards:
        summary = processing.merge_shards(args.manifest, args.out, args.merge_shards)
        print(json.dumps(summary.model_dump(mode="json"), sort_keys=True) if args.json
              else f"infer-batch: merged {args.merge_shards} shards: {summary.invariant}")
        return 0
    bundle_uri = None if args.no_model else resolve_bundle_uri(settings, args.bundle)
    descriptor = _descriptor(bundle_uri)
    zero_shot = descriptor is not None and descriptor.zero_shot is not None
    settings = _judgement_for_batch(args, settings, bundle_uri, zero_shot=zero_shot)
    shard_index, shard_count = _shard(args)
    share = settings.labeling.human_budget_share
    # The step routes the whole batch and owns its output folder; a Processing instance or a manual shard writes
    # one shard of it, which only the merge makes an output.
    whole_batch = shard_count == 1 and args.shard_index != "auto"
    bundle_id = descriptor.bundle_id if descriptor is not None else None
    # a zero-shot bundle's labels are never accepted, so no audit measures them and there is nothing to pause
    report = _guarantee_report(args, settings, None if zero_shot else bundle_id) if whole_batch else None
    job_inputs = infer_inputs(step_outputs.content_sha256(args.manifest), bundle_id, zero_shot, settings)
    inputs = {**job_inputs, "guarantee": report.as_json() if report is not None else None}
    if whole_batch:
        stored = step_outputs.stored_output(args.out, INFER_STEP, step_outputs.digest(inputs))
        if stored is not None:
            print(f"infer-batch: reused the output for this batch and bundle {bundle_id or 'none (cold start)'} "
                  f"(inputs {stored.inputs_sha256[:12]}); nothing inferred", file=sys.stderr)
            # what the run that made the output printed (summary.json itself carries the budget's additions)
            summary = BatchSummary.model_validate(stored.result["summary"])
            _print_result(args, summary, dict(stored.result["routes"]), zero_shot, share is not None)
            return 0
        step_outputs.begin_output(args.out, INFER_STEP, inputs)
    executor = args.executor
    if executor == "auto":
        executor = "local" if shard_count > 1 else {
            "codebuild": "local", "processing": "processing"
        }[processing.choose_executor(processing.count_manifest_lines(args.manifest), settings)]
    if executor == "processing":
        summary = _run_processing(args, settings, bundle_uri, zero_shot, job_inputs)
    else:
        engine = None
        if bundle_uri is not None:
            from inference.engine import InferenceEngine

            cache = Path(args.cache_dir or Path(tempfile.gettempdir()) / "alp-bundles")
            engine = InferenceEngine.from_bundle(bundle_uri, settings, cache)
        summary = run_batch(args.manifest, args.out, settings, engine=engine, shard_index=shard_index,
                            shard_count=shard_count, progress=args.progress)
    routes: dict[str, int] = dict(summary.routes)
    if getattr(args, "thresholds_record", None):
        storage.write_text(storage.join(args.out, "thresholds.json"), args.thresholds_record,
                           content_type="application/json")
    guarantee, paused = _guarantee(args, None if zero_shot else summary.bundle_id, report)
    if paused is not None and routes.get("auto"):
        # The audits say this model's auto-labels miss the target precision: people label everything.
        from inference.budget import pause_auto_labels

        routes = pause_auto_labels(args.out, paused, settings)
        print(f"infer-batch: {paused}", file=sys.stderr)
    if share is not None:
        # A human budget: people get the images the judgement is least sure of, up to the budget; the rest of
        # its doubts go back to the queue (deferred.jsonl, sent back by the Requeue step).
        from inference.budget import batch_budget, reroute_batch

        routable = summary.inputs - summary.routes.get("quarantine", 0)
        routes = reroute_batch(args.out, batch_budget(routable, share), "judgement", 0, settings)
    elif paused is None and summary.bundle_id is not None and shard_count == 1 and not zero_shot:
        # The shadow sample: at least judgement.min_audits audited parts a batch, so the audits keep up (not in a
        # Processing instance; not for a zero-shot bundle, whose parts all go to people with its proposals)
        from inference.budget import ensure_min_audits

        routes = ensure_min_audits(args.out, settings) or routes
    # Names and the Step dimension match what the stack's dashboard and quarantine alarm read.
    emit_metrics(INFER_STEP, {
        **guarantee,
        **_part_shares(args.out),
        "images": summary.inputs,
        **{f"images_{route}": routes.get(route, 0) for route in (*ROUTES, "deferred")},
        "quarantine_share": routes.get("quarantine", 0) / summary.inputs if summary.inputs else 0.0,
        **({"inference_ms_per_image": 1000.0 * summary.timings["total_s"] / summary.inputs}
           if summary.inputs and "total_s" in summary.timings else {}),
    }, namespace=settings.observability.metrics_namespace)
    if whole_batch:
        # last: the record says complete only once every file above is written (and the metrics are out, so a
        # reuse, which emits none, never counts a batch twice)
        step_outputs.finish_output(args.out, INFER_STEP, inputs,
                                   result={"routes": routes, "summary": summary.model_dump(mode="json")})
    _print_result(args, summary, routes, zero_shot, share is not None)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("infer-batch", help="infer, judge and route a batch manifest")
    p.set_defaults(credentials_hint="pass --bundle DIR (a model bundle folder) or --no-model (cold start), or "
                                    "configure AWS credentials to read the model registry")
    p.add_argument("--manifest", required=True, help="batch manifest (one source-ref per line): path or s3:// URI")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--bundle", help="model bundle (folder or s3:// prefix); default: the registry's latest "
                                        "approved bundle, else inference.zero_shot_bundle")
    group.add_argument("--no-model", action="store_true", help="cold start: send every readable image to people")
    p.add_argument("--shard-index", default="0", help="this worker's shard, or 'auto' inside SageMaker Processing")
    p.add_argument("--shard-count", type=int, default=1)
    p.add_argument("--executor", choices=("auto", "local", "processing"), default="auto",
                   help="auto: SageMaker Processing above inference.processing_threshold_images images")
    p.add_argument("--merge-shards", type=int, metavar="N", help="only merge N shard outputs under --out")
    p.add_argument("--head-model-held", action="store_true",
                   help="a Processing instance: the submitting step keeps the Rekognition head model running")
    p.add_argument("--judgement", metavar="JSON", help=argparse.SUPPRESS)  # a Processing instance: the Infer
    # step's judgement settings for this batch (audit seed, learned thresholds)
    p.add_argument("--cache-dir", help="where s3:// bundles are cached (default: temp dir)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print summary.json")
    p.set_defaults(func=_infer_batch)
