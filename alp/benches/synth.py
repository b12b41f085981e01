"""``alp bench synth``: milliseconds per synthetic frame (render + truth + JPEG), one core.

Same-run baseline: JPEG-encoding a noise picture of the same size, the floor any image writer pays.
The ratio says how many such encodes one synthetic frame costs; the budget is ~50 ms at 640x480.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _bench(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from alp.synth import encode_jpeg, render_scene

    size = (args.width, args.height)
    render_scene(args.seed, 10_000, size=size)  # warm-up: imports, font-free PIL paths
    frame_ms, render_ms = [], []
    for i in range(args.n):
        t0 = time.perf_counter()
        scene = render_scene(args.seed, i, size=size, hard_share=args.hard_share)
        t1 = time.perf_counter()
        encode_jpeg(scene.image)
        t2 = time.perf_counter()
        frame_ms.append((t2 - t0) * 1000.0)
        render_ms.append((t1 - t0) * 1000.0)
    rng = np.random.default_rng(0)
    base_ms = []
    for _ in range(args.n):
        noise = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")
        t0 = time.perf_counter()
        encode_jpeg(noise)
        base_ms.append((time.perf_counter() - t0) * 1000.0)
    ms = statistics.median(frame_ms)
    base = statistics.median(base_ms)
    result = {
        "bench": "synth",
        "width": size[0],
        "height": size[1],
        "images": args.n,
        "ms_per_image": round(ms, 2),
        "ms_per_image_mean": round(statistics.fmean(frame_ms), 2),
        "ms_render_median": round(statistics.median(render_ms), 2),
        "baseline": "jpeg-encode of a noise image of the same size",
        "baseline_ms": round(base, 2),
        "ratio_to_baseline": round(ms / base, 2) if base > 0 else None,
        "budget_ms": 50.0,
        "within_budget": ms <= 50.0,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("synth", help="ms per synthetic 640x480 frame vs a JPEG-encode baseline")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--hard-share", type=float, default=0.3)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)
