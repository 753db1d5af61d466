# The waorch services image: gateway, Celery workers, beat, flower, CLI (docker-compose.yml).
#   docker build -t waorch:latest .
# Session workers run in their own image (worker_container/Dockerfile), started by the docker runner.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md celeryconfig.py ./
COPY waorch/ waorch/
COPY app/ app/
COPY tasks/ tasks/
COPY worker_container/ worker_container/
COPY lua_scripts/ lua_scripts/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels waorch \
    && rm -rf /wheels \
    && python -c "import app, tasks.celery_app, waorch.cli.main"

# uid 10001 like the worker image: session directories the docker runner creates are then
# writable by the session containers.
ARG WAORCH_UID=10001
RUN useradd --uid "${WAORCH_UID}" --user-group --home-dir /var/lib/waorch --create-home \
        --shell /usr/sbin/nologin waorch \
    && mkdir -p /var/lib/waorch/state /var/lib/waorch/backups \
    && chown -R waorch:waorch /var/lib/waorch
USER waorch
WORKDIR /var/lib/waorch

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WAORCH_STATE_DIR=/var/lib/waorch/state \
    WAORCH_BACKUP_DIR=/var/lib/waorch/backups \
    WAORCH_BIND=0.0.0.0 \
    WAORCH_PORT=8080

EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["waorch"]
CMD ["gateway"]
