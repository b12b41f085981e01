"""``alp studio up|status|down``: a real Label Studio on this machine for people to label in.

``up`` installs the pinned Label Studio on first use (its own environment), starts it on 127.0.0.1 with its
state under the run folder, makes the admin user and the API token, creates the two projects (head boxes,
person keypoints) from the repository's configs and writes ``<run dir>/studio.json``
(``{"url", "token", "projects": {"heads", "keypoints"}, ...}``, mode 0600). Point a local run at it with
``ALP_STUDIO_FILE=<run dir>/studio.json`` and ``labeling.backend: "label-studio"`` (``alp demo --workforce
studio`` does both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from alp.commands import tcp_port


def _up(args: argparse.Namespace) -> int:
    from alp.labeling.label_studio import studio_up
    from alp.settings import load_settings
    from alp.studio.server import STUDIO_FILE

    settings = load_settings()
    run_dir = Path(args.run_dir)

    def say(message: str) -> None:
        print(f"alp studio: {message}", file=sys.stderr, flush=True)

    say(f"starting Label Studio {settings.labeling.studio.version} on 127.0.0.1:{args.port} (state in {run_dir})")
    connection = studio_up(run_dir, settings, port=args.port, timeout_seconds=args.timeout_seconds, say=say)
    say(f"projects: {json.dumps(connection.projects, sort_keys=True)}")
    say(f"log in as {connection.username}; the password and the API token are in {run_dir / STUDIO_FILE}")
    print(connection.url)
    return 0


def _status(args: argparse.Namespace) -> int:
    from alp.studio.server import STUDIO_FILE, StudioConnection, running, status_record

    run_dir = Path(args.run_dir)
    connection = StudioConnection.read(run_dir / STUDIO_FILE)
    record = running(run_dir)
    out: dict[str, Any] = {"running": record is not None, "pid": record.pid if record else None}
    if record is not None:
        out.update(status_record(connection))
    else:
        out.update({"url": connection.url, "projects": {}})
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"Label Studio at {out['url']}: {'running' if record else 'not running'}")
        for key, project in out["projects"].items():
            print(f"  {key}: {project['finished']}/{project['tasks']} tasks finished")
    return 0


def _down(args: argparse.Namespace) -> int:
    from alp.studio.server import stop_server

    stopped = stop_server(Path(args.run_dir))
    print(f"alp studio: {'stopped' if stopped else 'no server was running'} ({args.run_dir})", file=sys.stderr)
    return 0



def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("studio", help="run Label Studio on this machine (up, status, down)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="studio_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start Label Studio, create the projects, print the URL")
    up.add_argument("--run-dir", default="studio-run", help="state folder (default ./studio-run)")
    up.add_argument("--port", type=tcp_port, default=8080, help="port on 127.0.0.1 (default 8080)")
    up.add_argument("--timeout-seconds", type=float, default=300.0, help="how long to wait for the first start")
    up.set_defaults(func=_up)
    status = sub.add_parser("status", help="tasks and finished tasks per project, as Label Studio reports them")
    status.add_argument("--run-dir", default="studio-run")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    down = sub.add_parser("down", help="stop the server this run folder started")
    down.add_argument("--run-dir", default="studio-run")
    down.set_defaults(func=_down)
