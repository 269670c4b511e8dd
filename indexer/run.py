"""`recchain index`: hold the leader lock, serve metrics, run the configured source."""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import start_http_server

from db.session import database_url, engine_scope
from indexer import metrics
from indexer.pipeline import Indexer
from infra.config import Settings

log = logging.getLogger("recchain.indexer")


async def _serve_observer(indexer: Indexer, settings: Settings) -> None:
    import uvicorn

    from indexer.observer import create_app
    from infra.httpserver import server_config
    from infra.listen import Listener, check_free

    # Checked only now that this process leads: a standby waits for the leader's port.
    check_free(
        [
            Listener(
                "the indexer's event observer",
                settings.indexer.listen_host,
                settings.indexer.listen_port,
                "indexer.listen_port",
                hint="--listen HOST:PORT or RECCHAIN_INDEXER__LISTEN_PORT=PORT",
                host_setting="indexer.listen_host",
            )
        ]
    )
    app = create_app(indexer, settings.indexer.max_body_bytes)
    config = server_config(
        app,
        host=settings.indexer.listen_host,
        port=settings.indexer.listen_port,
        settings=settings.http,
        log_level="warning",
    )
    await uvicorn.Server(config).serve()


async def run_indexer(settings: Settings, source: str, replay_file: str | None = None) -> int:
    url = database_url(settings)
    start_http_server(settings.indexer.metrics_port, addr=settings.indexer.metrics_host)

    async def work() -> int:
        async with engine_scope(url, pool_size=2) as engine:
            if source == "replay":
                from indexer.replay import replay_file as replay

                if replay_file is None:
                    log.error("--source replay needs --file")
                    return 2
                await replay(engine, settings, Path(replay_file), follow=True, progress=False)
                return 0
            async with engine.connect() as conn:
                indexer = Indexer(conn, settings)
                await indexer.start()
                if source == "observer":
                    await _serve_observer(indexer, settings)
                    return 0
                if source == "api":
                    from indexer.api_source import ApiSource

                    await ApiSource.from_settings(indexer, settings).run()
                    return 0
                log.error("source %r is not available in this build", source)
                return 2

    try:
        from db.leader import run_as_leader
    except ImportError:
        return await work()

    async def lead() -> int:
        metrics.LEADER.set(1)
        try:
            return await work()
        finally:
            metrics.LEADER.set(0)

    return await run_as_leader(url, "indexer", lambda _held: lead())
