"""The deployment tier: each overlay as rendered, run here as a cluster would run it
(tests/deploy/deployment.py, tests/deploy/cluster.py): migrations, probes, a client
through the Services, Prometheus, the NetworkPolicies, SIGTERM. test_mistakes.py shows
that a mistake in the manifests fails it."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import cairn
from cairn.types import ObjectInfo
from cairn_server import catalog
from cairn_server.common.migrations import discover
from tests.conftest import HeldBack, eventually
from tests.deploy import policies
from tests.deploy.cluster import Cluster, Connection, Pod
from tests.deploy.deployment import (
    CLIENT,
    deploy,
    documented_client,
    documented_key_command,
    documented_port,
    security,
)
from tests.deploy.manifests import OVERLAYS, named, objects, of_kind

PROMETHEUS = policies.Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
NOISY = {"warning", "error", "critical"}
# The startup probe's try by which a server answers SERVING: the probes find one
# SERVING on the second or third (2-4 s after its start, two cores shared by every pod).
SERVING_BY_TRY = 4


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


@dataclass
class Deployment:
    overlay: str
    cluster: Cluster
    tls: dict[str, str] | None
    seconds_to_ready: float
    key: str  # the first admin key, made as docs/deploy.md says


@pytest.fixture(scope="module", params=OVERLAYS)
async def deployed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    s3_endpoint: str,
) -> AsyncIterator[Deployment]:
    overlay = str(request.param)
    started = time.monotonic()
    cluster, tls = await deploy(
        objects(overlay), tmp_path_factory.mktemp(f"k8s-{overlay}"), postgres_url, s3_endpoint
    )
    try:
        ready = time.monotonic() - started
        deployment, container, argv = documented_key_command()
        key = (await cluster.exec(deployment, container, argv)).strip().splitlines()[-1]
        yield Deployment(overlay, cluster, tls, ready, key)
    finally:
        await cluster.close()


async def test_migrations_apply_once_though_the_job_and_init_containers_race(
    deployed: Deployment,
) -> None:
    cluster = deployed.cluster
    (attempts,) = cluster.jobs.values()
    assert [p.exited() for p in attempts] == [0]
    applied = [
        (event["schema"], event["migration"])
        for _, event in cluster.logs()
        if event.get("event") == "migration applied"
    ]
    expected = [(s.schema, m.name) for s in catalog.select([]) for m in discover(s.migrations_dir)]
    assert sorted(applied) == sorted(expected)
    for pod in cluster.pods.values():
        inits = [c["name"] for c in pod.spec.get("initContainers", [])]
        assert all(pod.processes[name].exited() == 0 for name in inits), pod.name


async def test_every_server_is_serving_under_its_probes(deployed: Deployment) -> None:
    """Ready, and quickly: SERVING by the startup probe's fourth try, though
    failureThreshold allows minutes; a server that starts slowly fails here."""
    servers = [p for p in deployed.cluster.pods.values() if p.labels.get("cairn.dev/server")]
    assert len(servers) == 3
    for pod in servers:
        (container,) = pod.spec["containers"]
        startup = container["startupProbe"]
        within = startup.get("initialDelaySeconds", 0) + SERVING_BY_TRY * startup["periodSeconds"]
        assert pod.ready and pod.serving_after is not None, pod.name
        assert pod.serving_after < within, (pod.name, pod.serving_after)


async def test_a_client_works_across_the_three_services(
    deployed: Deployment, tmp_path: Path
) -> None:
    """The first key made as docs/deploy.md says, then tracking, run artifacts,
    registry and auth, each through its own Service (over TLS in prod)."""
    cluster = deployed.cluster
    before = len(cluster.connections)
    async with documented_client(cluster, deployed.tls, deployed.key) as client:
        experiment = await client.tracking.create_experiment(f"k8s-{deployed.overlay}")
        run = (await client.tracking.create_run(experiment)).info.run_id
        await client.tracking.log_metric(run, "loss", 0.5, step=1)
        await client.tracking.log_text(run, "hello", "notes/hello.txt")
        listed = await client.tracking.list_artifacts(run, "notes")
        assert [a.path for a in listed] == ["notes/hello.txt"]
        local = await client.tracking.download_artifacts(run, "notes/hello.txt", tmp_path)
        assert Path(local).read_text() == "hello"
        await client.registry.create_registered_model(f"k8s-model-{deployed.overlay}")
        assert [p.name for p in await client.auth.get_projects()]
    made = cluster.connections[before:]
    reached = {c.what.split(":")[0] for c in made if c.source == CLIENT}
    assert reached == {f"service cairn-{s}" for s in ("tracking", "registry", "artifacts")}


async def test_a_headless_service_reaches_its_pods_at_the_documented_port(
    deployed: Deployment,
) -> None:
    """A headless Service's name resolves to its pods' addresses and the client
    connects to them at the documented port (no forwarding maps it to a targetPort):
    the address list DNS would answer, as a gRPC target."""
    reached = await _through_the_headless_services(deployed)
    assert sorted(reached) == [f"cairn-{s}-headless" for s in ("artifacts", "registry", "tracking")]


async def _through_the_headless_services(deployed: Deployment) -> dict[str, list[str]]:
    """A call through every headless Service to its ready pods; the pods each reached."""
    cluster = deployed.cluster
    port = documented_port()
    reached = {}
    for name, service in cluster.namespace.services.items():
        if service["spec"].get("clusterIP") != "None":
            continue
        pods = cluster.endpoints(service)
        assert pods, f"{name} has no ready endpoints"
        addresses = ",".join(f"{pod.ip}:{port}" for pod in pods)
        headless = cairn.Client(
            f"ipv4:{addresses}", user_token=deployed.key, **security(deployed.tls)
        )
        async with headless as client:
            assert await client.auth.get_projects(), name
        for pod in pods:
            target = pod.as_peer(cluster.namespace.name)
            cluster.connections.append(Connection(CLIENT, target, port, f"service {name}"))
        reached[name] = [pod.name for pod in pods]
    return reached


async def test_prometheus_scrapes_every_server(deployed: Deployment) -> None:
    assert sorted(await _scrape_every_server(deployed.cluster)) == [
        f"cairn-{s}-0" for s in ("artifacts", "registry", "tracking")
    ]


async def _scrape_every_server(cluster: Cluster) -> list[str]:
    """Prometheus's scrape of each server's metrics port; the pods scraped."""
    scraped = []
    for pod in cluster.pods.values():
        if not pod.labels.get("cairn.dev/server"):
            continue
        port = pod.container_ports()["metrics"]
        body = await asyncio.to_thread(_get, f"http://{pod.ip}:{port}/metrics")
        assert b"# TYPE" in body
        target = pod.as_peer(cluster.namespace.name)
        cluster.connections.append(Connection(PROMETHEUS, target, port, "metrics"))
        scraped.append(pod.name)
    return scraped


async def _through_every_service(deployed: Deployment) -> None:
    """A call through each ClusterIP Service, at the documented port."""
    async with documented_client(deployed.cluster, deployed.tls, deployed.key) as client:
        await client.tracking.search_experiments()
        await client.registry.get_registered_models()
        await client.artifacts.list()


async def test_the_network_policies_allow_every_connection_made(deployed: Deployment) -> None:
    """Every kind of connection the deployment sees, made here (whatever other tests
    ran): the client's through each Service and headless Service, Prometheus's, and
    the pods' own, to the database and S3."""
    cluster = deployed.cluster
    await _through_every_service(deployed)
    await _through_the_headless_services(deployed)
    await _scrape_every_server(cluster)
    cluster.record_dependencies()
    policies_ = of_kind(cluster.objects, "NetworkPolicy")
    kinds = {c.what.split(":")[0] for c in cluster.connections}
    services = {f"service cairn-{s}" for s in ("tracking", "registry", "artifacts")}
    assert {"database", "s3", "metrics", *services, *(f"{s}-headless" for s in services)} <= kinds
    denied = [
        c
        for c in cluster.connections
        if not policies.allowed(policies_, c.source, c.target, c.port)
    ]
    assert denied == []
    # The same connections under a policy that names another gRPC port: denied.
    wrong = copy.deepcopy(policies_)
    servers = named(wrong, "NetworkPolicy", "cairn-servers")
    servers["spec"]["ingress"][0]["ports"][0]["port"] = 50052
    assert any(not policies.allowed(wrong, c.source, c.target, c.port) for c in cluster.connections)


async def test_a_fresh_deployment_logs_no_error(deployed: Deployment) -> None:
    noisy = [(w, e["event"]) for w, e in deployed.cluster.logs() if e.get("level") in NOISY]
    assert noisy == []


# Last of the tests on `deployed`: it stops every server.
async def test_every_server_exits_cleanly_on_sigterm_within_its_grace(deployed: Deployment) -> None:
    """Exit 0, well within terminationGracePeriodSeconds, `stopped` logged last, and
    nothing logged at warning or above from the SIGTERM on; an upload under way when
    the artifact server is told to stop is finished and stored."""
    cluster = deployed.cluster
    servers = [p for p in cluster.pods.values() if p.labels.get("cairn.dev/server")]
    for pod in servers:
        (container,) = pod.spec["containers"]
        before = len(pod.processes[container["name"]].output().splitlines())
        if container["name"] == "artifacts":
            stored, (seconds, codes) = await _upload_across(cluster, deployed, pod)
            assert stored.size == HeldBack.SIZE
        else:
            seconds, codes = await cluster.terminate(pod)
        assert set(codes.values()) == {0}, (pod.name, codes)
        assert seconds < pod.spec["terminationGracePeriodSeconds"], pod.name
        after = pod.processes[container["name"]].output().splitlines()[before:]
        events = [json.loads(line) for line in after if line.startswith("{")]
        assert events[-1]["event"] == "stopped", pod.name
        assert [e["event"] for e in events if e.get("level") in NOISY] == [], pod.name


async def _upload_across(
    cluster: Cluster, deployed: Deployment, pod: Pod
) -> tuple[ObjectInfo, tuple[float, dict[str, int]]]:
    """An upload through the artifacts Service, SIGTERM to the pod while it is under
    way, then the rest of it sent."""
    source = HeldBack()
    async with documented_client(cluster, deployed.tls, deployed.key) as client:
        path = f"shutdown/{uuid.uuid4().hex}"
        upload = asyncio.ensure_future(client.artifacts.upload(path, source))  # type: ignore[arg-type]
        await asyncio.to_thread(source.under_way.wait, 30)
        terminated = asyncio.ensure_future(cluster.terminate(pod))
        await eventually(lambda: _logged(pod, "shutting down"), what="the server told to stop")
        source.go.set()
        return await upload, await terminated


def _logged(pod: Pod, event: str) -> bool:
    return any(f'"event": "{event}"' in p.output() for p in pod.processes.values())
