"""Make torchvision usable next to the CPU build of torch, and keep ultralytics offline.

The registry's torchvision 0.28.0 is a CUDA build: with the CPU torch 2.13.0 its compiled operators do
not load and ``import torchvision`` raises ``operator torchvision::nms does not exist``. YOLO detect and
pose need only ``nms``, so when (and only when) torchvision's own operators are missing we register the
``torchvision::nms`` schema with a pure-torch kernel before torchvision is first imported. On a machine
with a working torchvision this is a no-op.

:func:`prepare_ultralytics` must run before ``import ultralytics``: it points ultralytics' settings,
fonts and runs at a folder of the caller's choosing and switches off every download and auto-install.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

_LIBRARY: Any = None  # keeps the registered operator alive for the whole process


def _nms_kernel(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy NMS, torchvision's semantics. Each round keeps the best remaining box and drops the
    candidates it suppresses, so the work shrinks as it goes (an untrained model's thousands of boxes
    during validation would otherwise cost seconds per image)."""
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if rest.numel() == 0:
            break
        inter = ((torch.minimum(x2[best], x2[rest]) - torch.maximum(x1[best], x1[rest])).clamp(min=0)
                 * (torch.minimum(y2[best], y2[rest]) - torch.maximum(y1[best], y1[rest])).clamp(min=0))
        iou = inter / (areas[best] + areas[rest] - inter).clamp(min=1e-12)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep).to(torch.long)


def ensure_torchvision_ops() -> None:
    """Register ``torchvision::nms`` if torchvision's compiled operators cannot load."""
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (raises when the schema is missing)
        return
    except (AttributeError, RuntimeError):
        pass
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_kernel, "CPU")
    # torchvision's import registers fake (meta) kernels for both; the schemas must exist beforehand.
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib
    import torchvision.extension

    # torchvision.ops.nms asserts that its C++ extension loaded; nms is now served by the kernel above.
    torchvision.extension._has_ops = lambda: True


def prepare_ultralytics(config_dir: str | Path, *, threads: int | None = None) -> Any:
    """Offline, self-contained ultralytics: settings, fonts and runs under ``config_dir``.

    Returns the imported ``ultralytics`` module. ``threads`` sets torch's intra-op threads for the rest
    of the process (ultralytics drops to one thread on a 2-core machine otherwise).
    """
    config_dir = Path(config_dir).resolve()
    ul_dir = config_dir / "Ultralytics"
    ul_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_VERBOSE"] = os.environ.get("YOLO_VERBOSE", "False")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = ul_dir / name
        if not target.exists():
            shutil.copyfile(font, target)
    ensure_torchvision_ops()
    import ultralytics
    from ultralytics import settings as ul_settings

    ul_settings.update({
        "sync": False,
        "runs_dir": str(config_dir / "runs"),
        "datasets_dir": str(config_dir / "datasets"),
        "weights_dir": str(config_dir / "weights"),
    })
    if threads:
        import torch
        from ultralytics.utils import torch_utils

        torch.set_num_threads(threads)
        if hasattr(torch_utils, "NUM_THREADS"):
            torch_utils.NUM_THREADS = threads
    return ultralytics
