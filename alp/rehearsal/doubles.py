"""The services moto lacks, played so that the calls stay real botocore calls under the acting role.

- :class:`RekognitionDouble`: Rekognition Custom Labels answered by botocore's :class:`~botocore.stub.Stubber`,
  one queued answer per call, so every request is validated against the real service model (a wrong or
  missing parameter raises ``ParamValidationError``) and every answer against its output shape.
- :class:`ProcessingDouble`: when the Infer step's ``CreateProcessingJob`` has gone through (moto records
  the job), the job's instances run here the way SageMaker runs them: the input downloaded, the container's
  command run once per instance (``--shard-index`` given instead of read from SageMaker's resource config),
  the output folder uploaded - all under the role the request passes.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.stub import Stubber

from alp import aws, storage
from alp.rehearsal.principals import PrincipalSwitch


class RekognitionDouble:
    """A running Custom Labels model version that finds one head per image."""

    def __init__(self, project_version_arn: str, label: str = "head") -> None:
        self.version_arn = project_version_arn
        self.project_arn = project_version_arn.split("/version/")[0] + "/1700000000000"
        self.label = label
        self.calls = 0

    def attach(self, service: str, client: Any) -> None:
        if service != "rekognition":
            return
        stubber = Stubber(client)

        def answer(model: Any, params: dict[str, Any], **_: Any) -> None:
            stubber.add_response(_snake(model.name), self.response(model.name, params))
            self.calls += 1

        # provide-client-params comes before before-parameter-build, where the Stubber looks for its answer
        # (and the rehearsal checks the call's permissions)
        client.meta.events.register("provide-client-params.rekognition", answer)
        stubber.activate()

    def response(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        if operation == "DescribeProjects":
            return {"ProjectDescriptions": [{"ProjectArn": self.project_arn, "CreationTimestamp": now,
                                             "Status": "CREATED"}]}
        if operation == "DescribeProjectVersions":
            return {"ProjectVersionDescriptions": [{"ProjectVersionArn": self.version_arn, "CreationTimestamp": now,
                                                    "Status": "RUNNING", "MinInferenceUnits": 1}]}
        if operation == "DetectCustomLabels":
            return {"CustomLabels": [{"Name": self.label, "Confidence": 91.0, "Geometry": {"BoundingBox": {
                "Width": 0.18, "Height": 0.22, "Left": 0.41, "Top": 0.08}}}]}
        if operation in ("StartProjectVersion", "StopProjectVersion"):
            return {"Status": "STARTING" if operation.startswith("Start") else "STOPPING"}
        raise ValueError(f"the Rekognition double does not answer {operation}")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class ProcessingDouble:
    """Runs a Processing job's instances locally, under the job's role, when it is created."""

    def __init__(self, switch: PrincipalSwitch, run_container: Callable[[list[str]], int]) -> None:
        self.switch = switch
        self.run_container = run_container
        self.jobs: list[dict[str, Any]] = []
        self._request: dict[str, Any] = {}  # the CreateProcessingJob request being sent

    def attach(self, service: str, client: Any) -> None:
        if service != "sagemaker":
            return

        def after(model: Any, params: dict[str, Any], http_response: Any, **_: Any) -> None:
            if model.name == "CreateProcessingJob" and http_response.status_code == 200:
                self.run_job(params)

        def remember(model: Any, params: dict[str, Any], **_: Any) -> None:
            if model.name == "CreateProcessingJob":
                self._request = dict(params)

        client.meta.events.register("before-parameter-build.sagemaker.CreateProcessingJob", remember)
        client.meta.events.register("after-call.sagemaker.CreateProcessingJob",
                                    lambda **kw: after(params=self._request, **kw))

    def run_job(self, request: dict[str, Any]) -> None:
        role_name = str(request["RoleArn"]).rsplit("/", 1)[-1]
        identity = self.switch.identities[role_name]
        app = request["AppSpecification"]
        # SageMaker pulls the image with the job's role
        self.switch_check_image_pull(identity.name, str(app["ImageUri"]))
        count = int(request["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
        environment = {str(k): str(v) for k, v in (request.get("Environment") or {}).items()}
        step = f"{self.switch.step} > processing job {request['ProcessingJobName']}"
        self.jobs.append({"name": request["ProcessingJobName"], "instances": count, "image": app["ImageUri"]})
        for index in range(count):
            with tempfile.TemporaryDirectory(prefix="alp-processing-") as tmp, \
                    self.switch.acting_as(identity, f"{step} #{index}", environment):
                root = Path(tmp)
                paths: dict[str, str] = {}
                for inp in request.get("ProcessingInputs", []):
                    s3_input = inp["S3Input"]
                    local = root / s3_input["LocalPath"].lstrip("/")
                    _download_prefix(s3_input["S3Uri"], local)
                    paths[s3_input["LocalPath"]] = str(local)
                outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
                for out in outputs:
                    local = root / out["S3Output"]["LocalPath"].lstrip("/")
                    local.mkdir(parents=True, exist_ok=True)
                    paths[out["S3Output"]["LocalPath"]] = str(local)
                argv = [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]
                argv = [_remap(a, paths) for a in argv]
                argv = _explicit_shard(argv, index)
                if argv[:1] != ["alp"]:
                    raise ValueError(f"the processing double runs `alp ...` containers only, not {shlex.join(argv)}")
                rc = self.run_container(argv[1:])
                if rc != 0:
                    raise RuntimeError(f"processing job {request['ProcessingJobName']} instance {index} exited {rc}")
                for out in outputs:
                    _upload_folder(Path(paths[out["S3Output"]["LocalPath"]]), out["S3Output"]["S3Uri"])

    def switch_check_image_pull(self, role_name: str, image_uri: str) -> None:
        from alp.rehearsal.policy import Request

        host, _, rest = image_uri.partition("/")
        parts = host.split(".")
        if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"]:
            return
        repo = rest.split("@")[0].rsplit(":", 1)[0]
        arn = f"arn:aws:ecr:{parts[3]}:{parts[0]}:repository/{repo}"
        identity = self.switch.identities[role_name]
        with self.switch.acting_as(identity, f"{self.switch.step} > image pull"):
            self.switch.check("ecr:pull", [Request("ecr:GetAuthorizationToken", "*"),
                                           Request("ecr:BatchGetImage", arn),
                                           Request("ecr:GetDownloadUrlForLayer", arn)])


def _remap(arg: str, paths: dict[str, str]) -> str:
    for container_path, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        if arg == container_path or arg.startswith(container_path.rstrip("/") + "/"):
            return local + arg[len(container_path):]
    return arg


def _explicit_shard(argv: list[str], index: int) -> list[str]:
    out = list(argv)
    if "--shard-index" in out:
        out[out.index("--shard-index") + 1] = str(index)
    return out


def _download_prefix(uri: str, local: Path) -> None:
    loc = storage.parse_s3_uri(uri)
    s3 = aws.client("s3")
    local.mkdir(parents=True, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(loc.key):].lstrip("/") or Path(obj["Key"]).name
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=loc.bucket, Key=obj["Key"])["Body"].read())


def _upload_folder(folder: Path, uri: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        storage.write_bytes(storage.join(uri.rstrip("/") + "/", path.relative_to(folder).as_posix()), path.read_bytes())
