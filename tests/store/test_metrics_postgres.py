"""/metrics and /readyz on PostgreSQL: the tasks by status and platform come from one GROUP BY
on the shared database, and a database that goes away makes /readyz 503 (its password in no
answer) and layerbot_store_up 0, until it is back."""

from __future__ import annotations

from pathlib import Path

from bot.catalog import Catalog
from bot.store import states
from bot.store.backends import open_store
from tests.metrics_ops import get_json, ops_server
from tests.metrics_scrape import assert_task_counts_match, scrape, value
from tests.store.pg_cluster import PgCluster


async def test_postgres_counts_and_outage(pg_url: str, postgres: PgCluster, catalog: Catalog,
                                          tmp_path: Path) -> None:
    store = open_store(pg_url)
    other = open_store(pg_url)  # another runner's connection
    try:
        for n, platform in enumerate(["Local folder", "Local folder", "VMware vSphere"]):
            other.create_task(template="t", connector="c", platform=platform, image_name=f"i-{n}",
                              requested_by="alice", message="queued")
        first = other.list_tasks()[0]
        other.request_cancel(first.id, "alice", "cancelled")
        async with ops_server(store, catalog) as port:
            samples = await scrape(port)
            assert_task_counts_match(samples, store)
            assert sum(value(samples, "layerbot_tasks", status=s, platform=p)
                       for s in states.ALL for p in ("Local folder", "VMware vSphere")) == 3
            assert (await get_json(port, "/readyz"))[0] == 200

            postgres.stop()
            try:
                status, body = await get_json(port, "/readyz")
                assert status == 503
                assert body["checks"]["store"] == "unreachable"
                assert postgres.password not in str(body)
                assert pg_url.rsplit("/", 1)[-1] not in str(body)  # nor the database's name
                assert value(await scrape(port), "layerbot_store_up") == 0
            finally:
                postgres.start()
            assert (await get_json(port, "/readyz"))[0] == 200
            assert value(await scrape(port), "layerbot_store_up") == 1
    finally:
        store.close()
        other.close()
