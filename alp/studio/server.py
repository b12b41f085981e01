"""A Label Studio server on one machine: installed at a pinned version, bound to 127.0.0.1, state in a run folder.

Label Studio runs in an environment of its own (``$ALP_STUDIO_HOME``, default ``~/.cache/alp/label-studio/<version>``):
it pins Django and, through its SDK, an older numpy than the inference stack, so the two never share one.
The first start creates the organization, an admin user and an API token (all made here, written to
``<run dir>/studio.json`` with mode 0600, never printed or logged). Label Studio 1.23 refuses legacy tokens
unless the organization was created with ``--enable-legacy-api-token``; the server is started that way because
a legacy token is one long-lived secret the pipeline and the SDK both take as is, where a personal access
token needs a refresh flow in every client. Stop it with ``alp studio down`` (by process id, never by name).
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess  # nosec B404: starts the pinned Label Studio server and pip, with argument lists only
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from alp.processes import alive, stop_group
from alp.studio.client import StudioClient, StudioError

log = logging.getLogger(__name__)

STUDIO_FILE = "studio.json"
SERVER_FILE = "studio-server.json"
STUDIO_DIR = "studio"
HOME_ENV = "ALP_STUDIO_HOME"
BIN_ENV = "ALP_LABEL_STUDIO_BIN"  # a label-studio executable to use instead of the managed install
ADMIN_USER = "admin@localhost"
HOST = "127.0.0.1"
DEFAULT_PORT = 8080
BANNED_EXCEPT_LOOPBACK = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::ffff:0:0/96", "64:ff9b::/96",
    "100::/64", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)


class StudioConnection(BaseModel):
    """``studio.json``: how to reach the server and its projects (secret: mode 0600)."""

    url: str
    token: str = Field(repr=False)
    projects: dict[str, int] = Field(default_factory=dict)
    username: str = ADMIN_USER
    password: str = Field("", repr=False)

    @classmethod
    def read(cls, path: Path) -> StudioConnection:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: start Label Studio with `alp studio up --run-dir "
                                    f"{path.parent}` first")
        return cls.model_validate_json(path.read_text())

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.model_dump_json(indent=2))
        path.chmod(0o600)

    def client(self, **options: Any) -> StudioClient:
        return StudioClient(self.url, self.token, **options)


class ServerRecord(BaseModel):
    """``studio-server.json``: the running process (no secrets)."""

    pid: int
    port: int
    version: str
    log: str
    data_dir: str


def studio_home(version: str) -> Path:
    base = os.environ.get(HOME_ENV)
    return Path(base) if base else Path.home() / ".cache" / "alp" / "label-studio" / version


def server_executable(version: str, *, say: Callable[[str], None] = print) -> Path:
    """The ``label-studio`` executable of ``version``, installed into its own environment on first use."""
    override = os.environ.get(BIN_ENV)
    if override:
        return Path(override)
    home = studio_home(version)
    exe = home / "venv" / "bin" / "label-studio"
    marker = home / "venv" / f".installed-{version}"
    if exe.is_file() and marker.is_file():
        return exe
    say(f"installing Label Studio {version} into {home} (once; a few minutes)")
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)  # nosec B603
    pip = [str(home / "venv" / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    result = subprocess.run([*pip, f"label-studio=={version}"], capture_output=True, text=True)  # nosec B603
    if result.returncode != 0:
        raise RuntimeError(f"installing label-studio=={version} failed:\n{result.stderr[-2000:]}")
    marker.touch()
    return exe


def read_record(run_dir: Path) -> ServerRecord | None:
    path = run_dir / SERVER_FILE
    if not path.is_file():
        return None
    return ServerRecord.model_validate_json(path.read_text())


def running(run_dir: Path) -> ServerRecord | None:
    record = read_record(run_dir)
    return record if record is not None and alive(record.pid) else None


def start_server(run_dir: Path, *, port: int = DEFAULT_PORT, version: str = "1.23.2",
                 timeout_seconds: float = 300.0, say: Callable[[str], None] = print) -> StudioConnection:
    """Start (or find running) the run folder's Label Studio and return how to reach it. Images reach it as
    ``s3://`` URIs it presigns (the embedded AWS locally); serving a folder of files is not switched on."""
    run_dir = run_dir.resolve()
    studio_file = run_dir / STUDIO_FILE
    existing = StudioConnection.read(studio_file) if studio_file.is_file() else None
    record = running(run_dir)
    if record is not None and existing is not None:
        _wait_until_up(existing, record, timeout_seconds)
        return existing
    connection = existing or StudioConnection(url=f"http://{HOST}:{port}", token=secrets.token_hex(20),
                                              password=secrets.token_urlsafe(18))
    if existing is not None:
        port = int(existing.url.rsplit(":", 1)[1])
    exe = server_executable(version, say=say)
    data_dir = run_dir / STUDIO_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    env = dict(os.environ)
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": connection.username,
        "LABEL_STUDIO_PASSWORD": connection.password,
        "LABEL_STUDIO_USER_TOKEN": connection.token,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_HOST": connection.url,
        # Label Studio refuses storage endpoints on reserved networks (SSRF protection). The embedded AWS is on
        # 127.0.0.1, so loopback is allowed and every other reserved range stays banned (link-local, where
        # instance metadata lives, included).
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_EXCEPT_LOOPBACK),
        # Its model connections (ML backends) have their own check, which refuses every local address: the
        # suggestion service (`alp serve`) of this machine listens on 127.0.0.1, like this Label Studio.
        "ML_BLOCK_LOCAL_IP": "false",
    })
    args = [str(exe), "start", "--no-browser", "--port", str(port), "--internal-host", HOST,
            "--data-dir", str(data_dir), "--enable-legacy-api-token"]
    with log_path.open("ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,  # nosec B603
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=data_dir)
    record = ServerRecord(pid=process.pid, port=port, version=version, log=str(log_path), data_dir=str(data_dir))
    (run_dir / SERVER_FILE).write_text(record.model_dump_json(indent=2))
    connection.write(studio_file)
    try:
        _wait_until_up(connection, record, timeout_seconds, process=process)
    except BaseException:
        stop_server(run_dir)  # a server that did not come up is not left running
        raise
    return connection


def _wait_until_up(connection: StudioConnection, record: ServerRecord, timeout_seconds: float,
                   process: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``/health`` answers and the token is accepted; the first start runs the migrations."""
    deadline = time.monotonic() + timeout_seconds
    with connection.client(retries=0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with code {process.returncode} while starting; "
                                   f"its log: {record.log}")
            if client.health():
                try:
                    client.whoami()
                    return
                except StudioError as exc:
                    raise RuntimeError(f"Label Studio at {connection.url} is up but refuses the token in "
                                       f"studio.json ({str(exc).split(':')[0]})") from None
            time.sleep(0.5)
    raise TimeoutError(f"Label Studio at {connection.url} did not answer /health within {timeout_seconds:.0f} s; "
                       f"its log: {record.log}")


def stop_server(run_dir: Path, *, timeout_seconds: float = 20.0) -> bool:
    """Stop the run folder's server (and the workers it started) by its process id; ``False`` when none was
    running."""
    record = running(run_dir.resolve())
    return record is not None and stop_group(record.pid, timeout_seconds=timeout_seconds)


def status_record(connection: StudioConnection) -> dict[str, Any]:
    """Per project, the tasks and finished tasks as Label Studio reports them."""
    out: dict[str, Any] = {"url": connection.url, "projects": {}}
    with connection.client() as client:
        for key, project_id in connection.projects.items():
            project = client.project(project_id)
            out["projects"][key] = {"id": project_id, "title": project.title, "tasks": project.task_number or 0,
                                    "finished": project.finished_task_number or 0}
    return out

