# syntax=docker/dockerfile:1
# syncd as a long-running container. Build:  docker build -t syncd .
# Run (README.md, "Deploy"): mount the config at /etc/syncd/config.yaml, the secrets as
# files (e.g. /run/secrets/...), the state volume at /var/lib/syncd.
#
# Environment:
#   SYNCD_CONFIG   config file for commands run without -c (`syncd healthcheck`,
#                  `docker exec ... syncd history`); default /etc/syncd/config.yaml
#   NO_COLOR       set: plain console output (logs are JSON anyway without a TTY)
#   any ${VAR}     the config may read variables (${VAR}); pass them with -e, but
#                  prefer *_file keys for secrets so they stay out of `docker inspect`

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the syncd wheel and the wheels of its dependencies -----------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: a slim Python with only those wheels -----------------------------------
FROM ${PYTHON_IMAGE}
# tini as PID 1: forwards SIGTERM to syncd (which exits 0 within 8 s) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/*
# --no-index: only the wheels built above, nothing fetched at this stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels /wheels/syncd-*.whl \
 && mkdir -p /etc/syncd /var/lib/syncd \
 && chown 10001:10001 /var/lib/syncd \
 && chmod 0700 /var/lib/syncd

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NO_COLOR=1 \
    SYNCD_CONFIG=/etc/syncd/config.yaml

# A fixed numeric non-root user: Kubernetes' runAsNonRoot can check it without a passwd.
USER 10001:10001
WORKDIR /var/lib/syncd
# SQLite state: owned users, run history, audit log, job locks. Set state_dir to it.
VOLUME ["/var/lib/syncd"]
# server.listen must be 0.0.0.0:9464 in the config for this port to answer.
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["syncd", "healthcheck"]

ENTRYPOINT ["tini", "--", "syncd"]
CMD ["run", "-c", "/etc/syncd/config.yaml"]
