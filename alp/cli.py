"""The ``alp`` command line.

Subcommands live in ``alp/commands/<name>.py`` and benchmarks in ``alp/benches/<name>.py``; each module
exposes ``register(subparsers)`` and is discovered at start-up, so features add commands without editing
this file. Heavy imports (torch, ultralytics) belong inside the command functions, not at module level,
so ``alp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
from collections.abc import Iterator, Sequence

from alp import __version__
from alp.environment import patched_environ
from alp.settings import SETTINGS_ENV, SettingsError
from alp.storage import StorageError


def _discover(package: str, subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alp", description="Active-learning annotation pipeline: head boxes and keypoints on AWS."
    )
    parser.add_argument("--version", action="version", version=f"alp {__version__}")
    parser.add_argument("--settings", help="settings JSON (path or s3:// URI); default $ALP_SETTINGS_URI or cdk.json")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _discover("alp.commands", sub)
    return parser


@contextlib.contextmanager
def _settings_env(uri: str | None) -> Iterator[None]:
    """``--settings`` for the duration of one command (in-process callers run many commands in a row)."""
    if not uri:
        yield
        return
    with patched_environ({SETTINGS_ENV: uri}):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        with _settings_env(args.settings):
            rc = func(args)
    except (SettingsError, StorageError, ValueError, FileNotFoundError) as exc:
        print(f"alp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alp {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
