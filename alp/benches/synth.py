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
from typing import Literal

from pydantic import BaseModel, Field

from alp.benches.arguments import add_bench, options_from

BUDGET_MS = 50.0


class SynthBenchOptions(BaseModel):
    n: int = Field(30, ge=1, description="frames to time")
    seed: int = 0
    width: int = Field(640, ge=32)
    height: int = Field(480, ge=32)
    hard_share: float = Field(0.3, ge=0.0, le=1.0, description="share of hard scenes (occlusion, clutter)")


class SynthBenchResult(BaseModel):
    bench: Literal["synth"] = "synth"
    width: int
    height: int
    images: int
    ms_per_image: float
    ms_per_image_mean: float
    ms_render_median: float
    baseline: str = "jpeg-encode of a noise image of the same size"
    baseline_ms: float
    ratio_to_baseline: float | None
    budget_ms: float = BUDGET_MS
    within_budget: bool
    cpu_count: int | None


def _frame_times(options: SynthBenchOptions) -> tuple[list[float], list[float]]:
    """(render + encode, render alone) in ms for each of ``n`` frames, after one warm-up frame."""
    from alp.synth import encode_jpeg, render_scene

    size = (options.width, options.height)
    render_scene(options.seed, 10_000, size=size)  # warm-up: imports, font-free PIL paths
    frame_ms, render_ms = [], []
    for i in range(options.n):
        t0 = time.perf_counter()
        scene = render_scene(options.seed, i, size=size, hard_share=options.hard_share)
        t1 = time.perf_counter()
        encode_jpeg(scene.image)
        t2 = time.perf_counter()
        frame_ms.append((t2 - t0) * 1000.0)
        render_ms.append((t1 - t0) * 1000.0)
    return frame_ms, render_ms


def _noise_encode_times(options: SynthBenchOptions) -> list[float]:
    """ms to JPEG-encode a noise picture of the frames' size, ``n`` times (the baseline)."""
    import numpy as np
    from PIL import Image

    from alp.synth import encode_jpeg

    rng = np.random.default_rng(0)
    base_ms = []
    for _ in range(options.n):
        noise = Image.fromarray(rng.integers(0, 256, size=(options.height, options.width, 3), dtype=np.uint8), "RGB")
        t0 = time.perf_counter()
        encode_jpeg(noise)
        base_ms.append((time.perf_counter() - t0) * 1000.0)
    return base_ms


def run_synth_bench(options: SynthBenchOptions) -> SynthBenchResult:
    frame_ms, render_ms = _frame_times(options)
    ms = statistics.median(frame_ms)
    base = statistics.median(_noise_encode_times(options))
    return SynthBenchResult(
        width=options.width, height=options.height, images=options.n, ms_per_image=round(ms, 2),
        ms_per_image_mean=round(statistics.fmean(frame_ms), 2),
        ms_render_median=round(statistics.median(render_ms), 2), baseline_ms=round(base, 2),
        ratio_to_baseline=round(ms / base, 2) if base > 0 else None, within_budget=ms <= BUDGET_MS,
        cpu_count=os.cpu_count())


def _main(args: argparse.Namespace) -> int:
    result = run_synth_bench(options_from(args, SynthBenchOptions)).model_dump(mode="json")
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_bench(subparsers, "synth", help="ms per synthetic 640x480 frame vs a JPEG-encode baseline",
              options=SynthBenchOptions, main=_main, json_help="one line of JSON")
