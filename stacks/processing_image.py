"""The container image of scale-out inference (SageMaker Processing), built by CDK from this repository.

``docker/processing.Dockerfile`` installs this package with its inference dependencies; CDK stages the build
context at synth (no Docker needed) and ``cdk deploy`` builds and pushes the image into the bootstrap's
container-asset repository. The stack uses it when ``inference.processing_image_uri`` is not set.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

DOCKERFILE = "docker/processing.Dockerfile"


class ProcessingImage(Construct):
    """The image asset; ``image_uri`` and ``repository_arn`` are deploy-time tokens.

    The build context is the repository root narrowed by its ``.dockerignore`` (an allow-list: the package
    sources and the Dockerfile), read with Docker's own ignore rules so synth stages exactly what ``docker
    build`` would see. ``linux/amd64``: the Processing instance types (ml.c5, ml.m5, ...) are x86_64, and a
    deploy from an arm64 machine must not push an arm64 image.
    """

    def __init__(self, scope: Construct, construct_id: str, *, repo_root: Path) -> None:
        super().__init__(scope, construct_id)
        self.asset = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(repo_root), file=DOCKERFILE, ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.image_uri: str = self.asset.image_uri
        # The bootstrap's one container-asset repository: ECR grants go no finer than a repository.
        self.repository_arn: str = self.asset.repository.repository_arn
