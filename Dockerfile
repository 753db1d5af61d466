# The waorch services image: gateway, Celery workers, beat, flower, CLI (docker-compose.yml).
#   docker build -t waorch:latest .
# Session workers run in their own image (worker_container/Dockerfile), started by the docker runner.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Everything goes into a venv at /opt/venv, which the runtime stage copies whole: the same on
# python:*-slim and on a plain Debian base (scripts/build-images.sh), whose python3 has no pip
# outside a venv.
RUN python3 -m venv /opt/venv
WORKDIR /src
# The dependencies first, from the packaging files alone (empty package directories), so that
# this layer stays cached until setup.cfg changes; the project itself goes in after it.
COPY pyproject.toml setup.cfg README.md ./
RUN mkdir waorch app tasks worker_container lua_scripts && touch celeryconfig.py \
    && /opt/venv/bin/pip install . && /opt/venv/bin/pip uninstall -y waorch \
    && rm -rf build ./*.egg-info
COPY celeryconfig.py ./
COPY waorch/ waorch/
COPY app/ app/
COPY tasks/ tasks/
COPY worker_container/ worker_container/
COPY lua_scripts/ lua_scripts/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall -y pip setuptools wheel \
    && /opt/venv/bin/python -c "import app, tasks.celery_app, waorch.cli.main"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

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
