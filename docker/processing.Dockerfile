# The container of scale-out inference: `alp infer-batch` on one shard of a batch, as a SageMaker Processing job
# (inference/processing.py, build_processing_request). The stack builds it as a CDK image asset at deploy time
# (stacks/processing_image.py); the build context is the repository root, narrowed by /.dockerignore.
#
#   docker build -f docker/processing.Dockerfile -t alp-processing .
#   docker run --rm alp-processing infer-batch --help
FROM python:3.11-slim

# Logs reach CloudWatch line by line; no .pyc files written at run time, no pip cache in the image.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The runtime dependencies of inference only (boto3, pydantic, numpy, pillow, onnxruntime, ...): no torch or
# ultralytics, which only training needs (the `train` extra). constraints.txt pins what the pipelines pin.
# The sources are installed, then removed, so only the installed package can be imported; `--help` imports
# every command module, which proves the image needs nothing the training extras bring.
COPY pyproject.toml README.md constraints.txt /tmp/alp-src/
COPY alp /tmp/alp-src/alp
COPY inference /tmp/alp-src/inference
RUN python -m pip install -c /tmp/alp-src/constraints.txt /tmp/alp-src \
    && rm -rf /tmp/alp-src \
    && alp infer-batch --help > /dev/null

WORKDIR /opt/ml
# The Processing request sets ContainerEntrypoint ["alp", "infer-batch"] and the shard's arguments; this
# entrypoint lets `docker run <image> infer-batch ...` run the same command locally.
# SageMaker mounts /opt/ml/processing/{input,output} owned by root, so the job runs as root; the container
# holds nothing but this package and reaches only what the job's role allows.
ENTRYPOINT ["alp"]
CMD ["--help"]
