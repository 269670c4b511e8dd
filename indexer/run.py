"""`recchain index`: serve metrics, hold the leader lock, run the configured source (the
observer listens leader or standby: indexer/service.py).

The observer that loses its lock session (a PostgreSQL restart or failover ends it, as does a
successor's takeover) stands by again in the same process and leads again when the lock is
free: `IndexerService` drops its `Indexer` and data connection when it stops leading and
builds them afresh from the database when it leads again, so nothing stale survives the
hand-over, and the epoch fence keeps a late write of the old term from committing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import start_http_server

from db.session import database_url, engine_scope
from indexer import metrics
from indexer.pipeline import Indexer
from infra.config import Settings

if TYPE_CHECKING:
    from db.leader import Leadership
    from indexer.service import IndexerService

log = logging.getLogger("recchain.indexer")


async def _lead_whenever_free(url: str, service: IndexerService) -> None:
    """Compete for the lock for as long as the process runs."""
    from db.leader import LeadershipLost, run_as_leader

    while True:
        try:
            await run_as_leader(url, "indexer", service.lead, outage=service.outage)
        except LeadershipLost:
            # Exiting here made a database restart kill every indexer process at once: the
            # node then met no answer until a supervisor restarted them, if one did.
            log.warning("stopped leading; standing by until the leader lock is free again")


async def _serve_observer(settings: Settings, url: str) -> int:
    """Listen at once, leader or standby (indexer/service.py); lead when the lock is free."""
    import uvicorn

    from indexer.observer import create_app
    from indexer.service import IndexerService
    from infra.httpserver import server_config
    from infra.listen import Listener, check_free

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
    async with engine_scope(url, pool_size=2) as engine:
        service = IndexerService(engine, settings)
        config = server_config(
            create_app(service, settings.indexer.max_body_bytes),
            host=settings.indexer.listen_host,
            port=settings.indexer.listen_port,
            settings=settings.http,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        leading = asyncio.create_task(_lead_whenever_free(url, service))
        try:
            await asyncio.wait({serving, leading}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leading.cancel()
            server.should_exit = True
            await asyncio.gather(leading, serving, return_exceptions=True)
        if not leading.cancelled() and leading.exception() is not None:
            raise leading.exception()  # type: ignore[misc]  # a bug of ours: exit, restart
        serving.result()
        return 0


async def run_indexer(settings: Settings, source: str, replay_file: str | None = None) -> int:
    url = database_url(settings)
    start_http_server(settings.indexer.metrics_port, addr=settings.indexer.metrics_host)
    if source == "observer":
        return await _serve_observer(settings, url)

    async def work(held: Leadership) -> int:
        async with engine_scope(url, pool_size=2) as engine:
            if source == "replay":
                from indexer.replay import replay_file as replay

                if replay_file is None:
                    log.error("--source replay needs --file")
                    return 2
                await replay(
                    engine, settings, Path(replay_file), follow=True, progress=False, fence=held
                )
                return 0
            async with engine.connect() as conn:
                indexer = Indexer(conn, settings)
                indexer.fence = held  # before start(): it may write (deferred indexes)
                await indexer.start()
                if source == "api":
                    from indexer.api_source import ApiSource

                    await ApiSource.from_settings(indexer, settings).run()
                    return 0
                log.error("source %r is not available in this build", source)
                return 2

    from db.leader import run_as_leader

    async def lead(held: Leadership) -> int:
        metrics.LEADER.set(1)
        try:
            return await work(held)
        finally:
            metrics.LEADER.set(0)

    return await run_as_leader(url, "indexer", lead)
