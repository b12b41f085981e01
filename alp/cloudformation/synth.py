"""Synthesize the CDK app for given settings into a cdk.out folder (cached per settings).

The embedded AWS is built from what the CDK app synthesizes, so the demo, the tests and ``alp rehearse``
run ``app.py`` the way ``make synth`` does, in a child process (jsii starts a Node runtime; keeping it out
of this process keeps the demo's memory and signals its own), with the settings as CDK context.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess  # nosec B404 - runs this checkout's own app.py with this interpreter
import sys
import time
from pathlib import Path

from alp.settings import CONTEXT_KEY, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
_STAMP = ".alp-settings.sha256"
CACHE_ENV = "ALP_CDK_CACHE"


class SynthError(RuntimeError):
    """The CDK app could not be synthesized (missing CDK extra or Node, or a failing cdk-nag check)."""


def stack_settings(settings: Settings) -> Settings:
    """What a local run synthesizes its stack with: its settings less the simulated workforce's answer file
    (a path of that run, which shapes no resource), so one synthesis serves every run with those settings. A local
    run's Label Studio is the one ``alp studio up`` starts, never the hosted service."""
    return settings.with_overrides({"labeling.local_truth_uri": None, "labeling.studio.hosted": False,
                                    # a local project's round-0 model: a file of that project, not a resource
                                    "inference.zero_shot_bundle": None, "inference.zero_shot_bundle_sha256": None,
                                    # the hosted suggestion service sits next to the hosted Label Studio only
                                    "serve.hosted": False})


def settings_digest(settings: Settings) -> str:
    return hashlib.sha256(settings.to_json().encode()).hexdigest()


def synthesize(settings: Settings, outdir: Path, *, repo_root: Path = REPO_ROOT, timeout: float = 300) -> Path:
    """``outdir`` holding the templates of the stack synthesized with ``settings``; reused when it already
    holds that synthesis (same settings, same app files)."""
    app = repo_root / "app.py"
    if not app.is_file():
        raise SynthError(f"no CDK app at {app}: the embedded AWS is built from the synthesized stack, which "
                         "needs the project checkout (pip install -e .)")
    digest = _digest(settings, repo_root)
    stamp = outdir / _STAMP
    if stamp.is_file() and stamp.read_text() == digest and (outdir / "manifest.json").is_file():
        return outdir
    outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({CONTEXT_KEY: json.loads(settings.to_json())}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": env.get("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20"),
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    })
    # A real account's credentials or endpoint have no business in an offline synth.
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "CDK_DEFAULT_ACCOUNT"):
        env.pop(key, None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(app)], cwd=repo_root, env=env, capture_output=True, text=True,  # noqa: S603  # nosec B603
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        hint = " (install the cdk extra: make setup)" if "No module named 'aws_cdk'" in tail else ""
        raise SynthError(f"synthesizing the stack failed{hint}:\n{tail}")
    stamp.write_text(digest)
    (outdir / ".alp-synth-seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
    return outdir


def cache_root() -> Path:
    """Where synthesized stacks are kept between runs: ``$ALP_CDK_CACHE``, else ``~/.cache/alp/cdk-out``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "alp" / "cdk-out"


def synthesize_cached(settings: Settings, *, repo_root: Path = REPO_ROOT) -> Path:
    """:func:`synthesize` into the cache, one folder per settings and app code; concurrent runs (the bench's
    workers) wait for each other instead of writing one folder twice."""
    import fcntl

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    outdir = root / _digest(settings, repo_root)[:20]
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return synthesize(settings, outdir, repo_root=repo_root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _digest(settings: Settings, repo_root: Path) -> str:
    """The settings plus the stack's own code: a change to either synthesizes again."""
    h = hashlib.sha256(settings_digest(settings).encode())
    for path in sorted([repo_root / "app.py", repo_root / "cdk.json", *(repo_root / "stacks").glob("*.py"),
                        repo_root / "alp" / "steps.py", repo_root / "alp" / "settings.py",
                        repo_root / "alp" / "resources.py", repo_root / "alp" / "labeling" / "completion.py"]):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()
