# syntax=docker/dockerfile:1.7
# One image for every Python role: `docker run recchain <command>` runs `recchain <command>`
# (index, serve, relay, metadata work, migrate, replay).

ARG PYTHON_VERSION=3.11

# --- build: resolve and install dependencies into a virtualenv -------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject alone, so a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt
# The GraphiQL IDE's assets (pinned npm tarballs, sha512-checked; the standard library alone).
COPY graphql_api/__init__.py graphql_api/ide.py ./graphql_api/
RUN python -m graphql_api.ide --dest /opt/ide_assets

# --- runtime: the virtualenv and the source, no compilers, not root ---------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECCHAIN_LOG_JSON=true \
    RECCHAIN_DATA_DIR=/var/lib/recchain
RUN groupadd --system --gid ${UID} recchain \
 && useradd --system --uid ${UID} --gid recchain --home-dir /app --shell /usr/sbin/nologin recchain \
 && install -d -o recchain -g recchain /var/lib/recchain
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The source tree runs as is (PYTHONPATH): Alembic finds its migration scripts next to the code.
COPY --chown=root:root infra ./infra
COPY --chown=root:root recchain ./recchain
COPY --chown=root:root stacks ./stacks
COPY --chown=root:root db ./db
COPY --chown=root:root indexer ./indexer
COPY --chown=root:root graphql_api ./graphql_api
COPY --from=build --chown=root:root /opt/ide_assets ./graphql_api/ide_assets
COPY --chown=root:root writers ./writers
COPY --chown=root:root ops/__init__.py ops/healthcheck.py ./ops/
USER recchain:recchain
# API 8000, observer 3700, relay 8010, metrics 9153 (indexer) / 9154 (metadata).
EXPOSE 8000 3700 8010 9153 9154
# Liveness of the API by default; compose and Kubernetes set a probe per role.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "ops.healthcheck", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["python", "-m", "recchain.cli"]
CMD ["--help"]
