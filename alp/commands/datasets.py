"""``alp datasets verify``: does every image of a dataset version still hold the pixels its labels were made on?"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

_VERSION_NAME = re.compile(r"^v\d{4,}$")


def version_name(text: str) -> str:
    """An argparse type: a dataset version's folder name, ``vNNNN``."""
    name = text.strip("/")
    if not _VERSION_NAME.match(name):
        raise argparse.ArgumentTypeError(f"must be a dataset version like v0003, got {text!r}")
    return name


def _data_root(args: argparse.Namespace) -> str:
    """``--data-root``, else ``$ALP_DATA_ROOT``, else the stack's data bucket (from the settings and the account)."""
    from alp.steps import DATA_ROOT_ENV

    if args.data_root:
        return str(args.data_root)
    if os.environ.get(DATA_ROOT_ENV):
        return os.environ[DATA_ROOT_ENV]
    from alp import aws
    from alp.resources import ResourceNames
    from alp.settings import load_settings

    return ResourceNames.from_settings(load_settings(), aws.account_id()).data_root


def _verify(args: argparse.Namespace) -> int:
    from alp import storage
    from alp.datasets import datasets_dir, list_versions, read_version
    from alp.pixels import verify_lines
    from alp.settings import load_settings

    settings = load_settings()
    data_root = _data_root(args)
    versions = list_versions(data_root, settings)
    names = [storage.basename(v.rstrip("/")) for v in versions]
    if not versions:
        raise FileNotFoundError(f"no dataset version under {datasets_dir(data_root, settings)}: check --data-root "
                                "(the Merge step writes the first one)")
    if args.version and args.version not in names:
        raise FileNotFoundError(f"no dataset version {args.version} under {datasets_dir(data_root, settings)}: it has "
                                f"{', '.join(names)}")
    uri = versions[names.index(args.version)] if args.version else versions[-1]
    name = storage.basename(uri.rstrip("/"))
    report = verify_lines(read_version(uri))
    if args.json:
        # the counts at the top ({"lines", "ok", "changed", "missing", "unpinned"}), the images beside them
        print(json.dumps({"version": name, "uri": uri, **report.counts(),
                          "changed_images": [p.model_dump() for p in report.changed],
                          "missing_images": [p.model_dump() for p in report.missing]}, sort_keys=True))
    else:
        print(f"{name}: " + ", ".join(f"{v} {k}" for k, v in report.counts().items()))
        for state, images in (("changed", report.changed), ("missing", report.missing)):
            for image in images:
                print(f"  {state}: {image.key} ({image.source_ref})")
        if report.unpinned:
            print(f"  {len(report.unpinned)} line(s) have no pinned sha256 (merged before pixels were pinned): "
                  "nothing to check them against", file=sys.stderr)
    return 0 if report.all_ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("datasets", help="dataset versions: check their images")
    sub = parser.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="read every image of a version and check it against its pinned sha256; "
                                           "exit code 1 when any changed, is missing or has no pin")
    verify.add_argument("--version", type=version_name, help="vNNNN (default: the latest)")
    verify.add_argument("--data-root", help="where datasets/ lives (default $ALP_DATA_ROOT, else the stack's data "
                                            "bucket)")
    verify.add_argument("--json", action="store_true", help="the counts and the lists as one line of JSON")
    verify.set_defaults(func=_verify, credentials_hint="pass --data-root (a folder or s3:// URI), or configure AWS "
                                                       "credentials to find the stack's data bucket")
