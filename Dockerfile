# adain HTTP service on a CUDA GPU host.
#   docker build -t adain .                          # bakes the default model's weights in
#   docker build --build-arg FETCH_WEIGHTS=0 -t adain .   # weights fetched on first start instead
#   docker run --gpus all -p 8000:8000 -v adain-data:/var/lib/adain adain
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG FETCH_WEIGHTS=1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADAIN_HOME=/var/cache/adain \
    ADAIN_DB=/var/lib/adain/styles.db \
    ADAIN_HOST=0.0.0.0 \
    ADAIN_PORT=8000

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin adain \
    && mkdir -p /var/cache/adain /var/lib/adain \
    && chown adain:adain /var/cache/adain /var/lib/adain

WORKDIR /app
COPY pyproject.toml README.md ./
COPY adain ./adain
COPY service ./service
COPY weights ./weights
# torch and torchvision come with the base image; only the rest is installed.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[service]'

USER 10001
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then adain weights pull; fi

EXPOSE 8000
VOLUME ["/var/cache/adain", "/var/lib/adain"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ADAIN_PORT', '8000')}/healthz\", timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["adain", "serve"]
