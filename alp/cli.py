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
from alp.cli_errors import explain
from alp.environment import patched_environ
from alp.settings import SETTINGS_ENV, settings_source


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
    parser.add_argument("--settings", help="settings JSON (path or s3:// URI); default $ALP_SETTINGS_URI, else the "
                                           "nearest cdk.json (this folder or above), else the built-in defaults")
    parser.add_argument("--debug", action="store_true", help="show the traceback when a command fails")
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
            print(f"alp {args.command}: {settings_source(args.settings)}", file=sys.stderr)
            rc = func(args)
    except KeyboardInterrupt:
        print(f"alp {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one line on stderr; --debug shows the traceback
        if args.debug:
            raise
        explained = explain(exc, getattr(args, "credentials_hint", None))
        print(f"alp {args.command}: error: {explained.message}", file=sys.stderr)
        return explained.exit_code
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
