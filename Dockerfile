# syntax=docker/dockerfile:1
# One image, both entry points: `imagecache-agent` (default command) and `imagecache-operator`.
#
#   docker build -t imagecache:dev .
#   docker run --rm --read-only --tmpfs /tmp -v cache:/var/cache/imagecache imagecache:dev \
#     imagecache-agent --upstream http://upstream/images/ --insecure-no-auth --listen 0.0.0.0:9292
#
# The builder stage makes a wheel of this project and installs it with its dependencies into a
# virtualenv at /opt/imagecache; the final stage copies only that virtualenv (no compilers, no
# pip, no caches) onto the same slim Python base, so the interpreter paths match.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Wheel first (the build backend stays in this stage), then a clean virtualenv with the wheel and
# its dependencies; byte-code compiled now because the final root filesystem is read-only; then
# the installers themselves are removed from the virtualenv.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/imagecache \
    && /opt/imagecache/bin/pip install /wheels/imagecache-*.whl \
    && /opt/imagecache/bin/pip uninstall --yes pip setuptools \
    && python -m compileall -q /opt/imagecache/lib \
    && mkdir -p /var/cache/imagecache \
    && /opt/imagecache/bin/imagecache-agent --help > /dev/null \
    && /opt/imagecache/bin/imagecache-operator --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="imagecache" \
      org.opencontainers.image.description="Instant, per-pod image caching for Glance-style image services on Kubernetes: cache agent and operator" \
      org.opencontainers.image.source="https://github.com/imagecache/imagecache" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Nothing is written outside mounted volumes and /tmp: no byte-code files, HOME under /tmp.
ENV PATH=/opt/imagecache/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    IMAGECACHE_CACHE_DIR=/var/cache/imagecache
COPY --from=builder /opt/imagecache /opt/imagecache
COPY --from=builder --chown=65532:65532 /var/cache/imagecache /var/cache/imagecache
WORKDIR /tmp
# A numeric user, so runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
EXPOSE 9292 8080
CMD ["imagecache-agent"]
