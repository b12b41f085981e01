"""What the command line says when a command fails: one line naming the problem and the fix.

Expected conditions (no AWS credentials, an AWS refusal, an unreachable endpoint, a missing file or folder, bad
settings, Label Studio not running, an unusable bundle) get a sentence of their own and exit code 2; anything
else is one line too, exit code 1, and ``alp --debug`` shows its traceback. A command may add a hint of its own
for the no-credentials case (``parser.set_defaults(credentials_hint=...)``): ``infer-batch`` names ``--bundle``.
"""

from __future__ import annotations

from dataclasses import dataclass

EXPECTED_EXIT = 2
UNEXPECTED_EXIT = 1


@dataclass(frozen=True)
class Explained:
    message: str
    exit_code: int


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain(exc: BaseException, credentials_hint: str | None = None) -> Explained:
    """The one-line message and exit code for ``exc``."""
    import botocore.exceptions as boto
    import pydantic

    from alp.bundle import BundleError
    from alp.settings import SettingsError
    from alp.storage import StorageError
    from alp.studio.client import StudioError, StudioUnavailable

    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        fix = credentials_hint or "configure AWS credentials (aws configure, AWS_PROFILE or an instance role)"
        return Explained(f"no AWS credentials found: {fix}", EXPECTED_EXIT)
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError | boto.ConnectionClosedError):
        return Explained(f"cannot reach AWS ({_one_line(str(exc))}): check the network, the Region and "
                         "AWS_ENDPOINT_URL", EXPECTED_EXIT)
    if isinstance(exc, boto.NoRegionError):
        return Explained("no AWS Region configured: set AWS_REGION (or aws configure)", EXPECTED_EXIT)
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        code, text = error.get("Code", "?"), error.get("Message", "")
        fix = ("the caller lacks that permission: use a role with it (the stack's roles have what each step needs)"
               if "AccessDenied" in code or "Unauthorized" in code else
               "it does not exist: deploy the stack (cdk deploy) or check the names in the settings"
               if code.startswith(("NoSuch", "ResourceNotFound")) or code in ("404", "NotFound") else
               "see the AWS message")
        return Explained(f"AWS refused {exc.operation_name}: {code} {_one_line(text)}: {fix}", EXPECTED_EXIT)
    if isinstance(exc, StudioUnavailable):
        return Explained(f"{_one_line(str(exc))}: start it with `alp studio up`, or check the URL", EXPECTED_EXIT)
    if isinstance(exc, StudioError):
        return Explained(f"Label Studio refused the request: {_one_line(str(exc))}", EXPECTED_EXIT)
    if isinstance(exc, FileNotFoundError):
        if exc.filename is not None:
            return Explained(f"no such file or folder: {exc.filename}: check the path", EXPECTED_EXIT)
        text = _one_line(str(exc))  # our own messages name the file, most of them the fix too
        return Explained(f"{text}: check the path" if text.startswith("no such file") else text, EXPECTED_EXIT)
    if isinstance(exc, NotADirectoryError | IsADirectoryError | PermissionError):
        return Explained(f"{exc.strerror or type(exc).__name__}: {exc.filename}: check the path", EXPECTED_EXIT)
    if isinstance(exc, TimeoutError):  # a server that did not come up, a job that did not finish: the message says
        return Explained(_one_line(str(exc)), EXPECTED_EXIT)
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
        return Explained(f"invalid {exc.title}: {problems}", EXPECTED_EXIT)
    if isinstance(exc, SettingsError | StorageError | BundleError | ValueError):
        return Explained(_one_line(str(exc)), EXPECTED_EXIT)
    return Explained(f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (run `alp --debug ...` for the "
                     "traceback)", UNEXPECTED_EXIT)
