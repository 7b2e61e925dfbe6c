# dbmaint: one image for the manager (`dbmaint-manager`), the workers (`dbmaint-worker`) and the client (`dbmaint`).
# compose.yaml picks the command per service. Build: docker build -t dbmaint .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --no-create-home dbmaint \
    && mkdir -p /data \
    && chown dbmaint:dbmaint /data

# A named volume mounted here starts with this directory's owner, so the unprivileged user can write to it.
WORKDIR /data
USER dbmaint

# 50051: the manager's gRPC port; 50052: a worker's grpc.health.v1 port (DBMAINT_HEALTH_LISTEN).
EXPOSE 50051 50052
CMD ["dbmaint", "--help"]
