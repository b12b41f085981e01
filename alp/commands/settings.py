"""``alp settings show``: the effective settings and where they were read from."""

from __future__ import annotations

import argparse
import json


def _show(args: argparse.Namespace) -> int:
    from alp.settings import load_settings

    settings = load_settings()
    if args.json:
        print(json.dumps(settings.model_dump(mode="json"), sort_keys=True))
        return 0
    print(settings.to_json())  # the settings file format: --settings or $ALP_SETTINGS_URI read it back
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("settings", help="the effective settings (from --settings, $ALP_SETTINGS_URI, the "
                                               "nearest cdk.json, or the built-in defaults)")
    sub = p.add_subparsers(dest="settings_command", metavar="SUBCOMMAND", required=True)
    show = sub.add_parser("show", help="print the effective settings as JSON")
    show.add_argument("--json", action="store_true", help="one line of JSON")
    show.set_defaults(func=_show)
