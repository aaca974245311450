"""A database outage under the manifests' probes: readiness takes the pod out of its
Service, liveness keeps it running, and it serves again once the database is back."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import eventually
from tests.deploy.deployment import deploy
from tests.deploy.manifests import objects
from tests.proxy import PostgresProxy


async def test_a_database_outage_takes_a_pod_out_of_service_and_restarts_none(
    postgres_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """Liveness asked for the name that follows the database: after three failures,
    30 s into any outage, the kubelet restarted every server, which then exited while
    the database was away and crash-looped past its return."""
    proxy = PostgresProxy(postgres_url)
    database_url = await proxy.start()
    cluster, _ = await deploy(
        objects("prod"), tmp_path, database_url, s3_endpoint, only={"cairn-registry"}
    )
    try:
        (pod,) = cluster.pods.values()
        (container,) = pod.spec["containers"]
        ready, live = container["readinessProbe"], container["livenessProbe"]
        proxy.partition()

        async def out_of_service() -> bool:
            return await cluster._probe(pod, ready) == "NOT_SERVING"

        await eventually(out_of_service, timeout=30, what="readiness failing in the outage")
        for _ in range(live["failureThreshold"]):
            assert await cluster._probe(pod, live) == "SERVING"
        proxy.heal()

        async def in_service() -> bool:
            return await cluster._probe(pod, ready) == "SERVING"

        await eventually(in_service, timeout=30, what="readiness once the database is back")
    finally:
        await cluster.close()
        await proxy.close()
