# The suggestion service: `alp serve`, the ML backend Label Studio connects to (GET /health, POST /setup,
# /predict, /webhook), answering from the model registry's current Approved bundle. The stack builds it as a
# CDK image asset when serve.hosted is true and runs it on ECS Fargate next to the hosted Label Studio
# (stacks/suggestion_service.py). The build context is the repository root, narrowed by /.dockerignore (an
# allow-list of the package sources; the stack re-admits this file when it stages the context).
#
#   docker build -f docker/serve.Dockerfile -t alp-serve .
#   docker run --rm -p 9090:9090 -e ALP_SETTINGS_URI=s3://<data bucket>/config/settings.json alp-serve
FROM python:3.11-slim

# Logs reach CloudWatch line by line; no .pyc files written at run time, no pip cache in the image.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The inference runtime (boto3, numpy, pillow, onnxruntime, ...) plus the `serve` extra (starlette, uvicorn):
# no torch or ultralytics, which only training needs. constraints.txt pins what the pipelines pin. The sources
# are installed, then removed, so only the installed package can be imported; the imports and `serve --help`
# prove the image holds what the service needs.
COPY pyproject.toml README.md constraints.txt /tmp/alp-src/
COPY alp /tmp/alp-src/alp
COPY inference /tmp/alp-src/inference
RUN python -m pip install -c /tmp/alp-src/constraints.txt "/tmp/alp-src[serve]" \
    && rm -rf /tmp/alp-src \
    && python -c "import starlette, uvicorn" \
    && alp serve --help > /dev/null

# A user of its own: the service only reads (the registry, S3) and caches bundles under its home folder.
RUN groupadd --system --gid 10001 alp \
    && useradd --system --uid 10001 --gid alp --create-home --home-dir /home/alp --shell /usr/sbin/nologin alp
USER 10001:10001
WORKDIR /home/alp

# The stack passes the settings' serve.port in the task's command; 9090 is the settings' default.
EXPOSE 9090
CMD ["alp", "serve", "--host", "0.0.0.0", "--port", "9090"]
