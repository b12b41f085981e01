"""The demo's data: a synthetic pool (uploaded round by round) and a frozen test set (another seed, never
uploaded, never trained on), generated once per run folder, or once for several runs (the bench)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from alp.demo import integration
from alp.demo.state import DemoConfig, DemoState
from alp.machine.console import say

TEST_SEED_OFFSET = 10_000  # the frozen test set's seed: never the pool's


@dataclass(frozen=True)
class SharedData:
    """A pool and a frozen test set generated once and read by several runs (the bench's strategies)."""

    pool_manifest: str
    test_manifest: str


def ensure_data(data_root: Path, state: DemoState, progress: bool) -> None:
    """The pool and the frozen test set under ``data_root`` (generated once; deterministic per seed)."""
    config = state.config
    t0 = time.monotonic()
    if state.pool_manifest is None or not Path(state.pool_manifest).is_file():
        say(f"generating the synthetic pool: {config.pool} images {config.width}x{config.height}")
        state.pool_manifest = integration.generate(data_root / "pool", config.pool, config.seed,
                                                   config.hard_share, (config.width, config.height), progress)
    if state.test_manifest is None or not Path(state.test_manifest).is_file():
        say(f"generating the frozen test set: {config.test_images} images (another seed)")
        state.test_manifest = integration.generate(data_root / "test", config.test_images,
                                                   config.seed + TEST_SEED_OFFSET, config.hard_share,
                                                   (config.width, config.height), progress)
        say(f"  generated in {time.monotonic() - t0:.1f}s")


def shared_data(data_root: Path, config: DemoConfig) -> SharedData:
    """Generate the pool and the test set of ``config`` under ``data_root`` once, before runs that share them
    start (concurrent runs must not each generate into the same folder).

    ``data.json`` records what was generated: a later call with the same configuration (a resumed bench) reads
    the existing manifests instead of writing the images again under runs that already use them.
    """
    record = data_root / "data.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if (saved.get("config") == config.model_dump(mode="json")
                and all(Path(saved.get(k, "")).is_file() for k in ("pool_manifest", "test_manifest"))):
            return SharedData(pool_manifest=saved["pool_manifest"], test_manifest=saved["test_manifest"])
    state = DemoState(config=config)
    ensure_data(data_root, state, progress=False)
    assert state.pool_manifest is not None and state.test_manifest is not None
    record.write_text(json.dumps({"config": config.model_dump(mode="json"), "pool_manifest": state.pool_manifest,
                                  "test_manifest": state.test_manifest}, indent=1))
    return SharedData(pool_manifest=state.pool_manifest, test_manifest=state.test_manifest)
