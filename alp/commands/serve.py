"""``alp serve``: suggestions while annotating, as a Label Studio ML backend (and a plain JSON API).

Serves ``--bundle DIR`` (checked against its ``bundle.json``), else the model registry's current Approved bundle
(checked against the hash the registry recorded), swapping in a newly approved one every ``serve.reload_seconds``.
Binds 127.0.0.1 unless ``--host`` says otherwise; in Label Studio: Settings -> Model -> Connect model, URL
``http://127.0.0.1:<port>`` (Label Studio 1.23 refuses loopback and private addresses unless it runs with
``ML_BLOCK_LOCAL_IP=false``). Images are read from ``serve.allowed_hosts``, Label Studio's own host, allowed
``s3://`` buckets and ``serve.image_root``; ``$ALP_SERVE_ALLOWED_HOSTS`` (comma-separated, set by the stack) adds
hosts to the settings'.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alp.commands import tcp_port

ALLOWED_HOSTS_ENV = "ALP_SERVE_ALLOWED_HOSTS"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _serve(args: argparse.Namespace) -> int:
    import logging

    from alp.serve.app import create_app, serve_forever
    from alp.settings import load_settings
    from alp.storage import is_s3

    # httpx logs every request's full URL at INFO: a presigned image URL's signature must not reach the logs
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = load_settings()
    if args.bundle and not is_s3(args.bundle) and not Path(args.bundle).is_dir():
        raise FileNotFoundError(2, "no such bundle folder", args.bundle)
    port = args.port or settings.serve.port
    extra = [h for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]

    def say(message: str) -> None:
        print(f"alp serve: {message}", file=sys.stderr, flush=True)

    if args.max_pending < args.workers:
        raise ValueError(f"--max-pending ({args.max_pending}) must be at least --workers ({args.workers})")
    app = create_app(settings, bundle_uri=args.bundle, cache_dir=args.cache_dir, extra_allowed_hosts=extra,
                     workers=args.workers, max_pending=args.max_pending)
    served = app.state.service.holder.current
    say(f"bundle {served.bundle_id} from {args.bundle}" if served else
        f"the registry's Approved bundle, checked every {settings.serve.reload_seconds:g} s")
    if args.host not in LOOPBACK:
        say(f"listening on {args.host}: reachable from other machines, without authentication")
    say(f"Label Studio: Settings -> Model -> Connect model, URL http://{args.host}:{port}")
    serve_forever(app, args.host, port)
    return 0



def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("serve", help="suggestions while annotating: a Label Studio ML backend",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=tcp_port, default=None, help="port (default settings.serve.port, 9090)")
    parser.add_argument("--bundle", help="serve this bundle folder (or s3:// prefix) instead of the registry's")
    parser.add_argument("--cache-dir", default=None, help="where bundles from S3 are kept (default a temp folder)")
    parser.add_argument("--workers", type=_workers, default=2,
                        help="images predicted at once (a bounded thread pool; default 2)")
    parser.add_argument("--max-pending", type=_workers, default=16,
                        help="images predicted or waiting at once; more are answered 503 busy (default 16)")
    parser.set_defaults(func=_serve)
