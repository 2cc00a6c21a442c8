# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target gateway  -t qsgw/gateway:0.1.0 .
#   docker build --target operator -t qsgw/operator:0.1.0 .
# See docs/operator.md for what each image may do and why.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: one wheel for the project, wheels for its dependencies ---------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vnf ./vnf
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- common runtime: the wheels installed into a virtualenv ----------------
FROM ${PYTHON_IMAGE} AS runtime
ENV VIRTUAL_ENV=/opt/qsgw PATH=/opt/qsgw/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m venv /opt/qsgw \
    && /opt/qsgw/bin/pip install --no-cache-dir --no-index --find-links=/wheels qsgw \
    && rm -rf /wheels

# --- the gateway: root inside the pod, but only the capabilities the pod
# spec adds (NET_ADMIN for XFRM and routes, NET_BIND_SERVICE for UDP 500,
# IPC_LOCK with QAT); the operator's pod spec drops all others.
FROM runtime AS gateway
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2=6.1.0-3 nftables=1.0.6-2+deb12u2 \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 500/udp 4500/udp 9500/tcp
ENTRYPOINT ["qsgw"]
CMD ["run", "--config", "/etc/qsgw/config/gateway.yaml"]

# --- the operator: an unprivileged user, no capabilities at all ------------
FROM runtime AS operator
RUN useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin qsgw
USER 65532:65532
ENTRYPOINT ["kopf", "run", "--standalone", "--all-namespaces", "-m", "qsgw_operator.handlers"]
