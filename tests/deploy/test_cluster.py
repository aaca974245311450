"""The deployment tier: each overlay as rendered, run here as a cluster would run it
(tests/deploy/cluster.py), with only what points outside the machine stood in for: the
database URL by a fresh database of the test PostgreSQL, the S3 endpoint by moto, the
TLS Secret by certificates made here. A mistake in a name, port, probe, secret key or
command of the manifests fails it; the last tests show that it does."""

from __future__ import annotations

import asyncio
import copy
import io
import itertools
import json
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import cairn
from cairn._clients.artifacts import CHUNK
from cairn.exceptions import UnauthenticatedError, UnavailableError
from cairn.types import ObjectInfo
from cairn_server import catalog
from cairn_server.common.migrations import discover
from tests.conftest import eventually, repo_root
from tests.deploy import policies
from tests.deploy.cluster import Cluster, Connection, Pod, PodFailed, subnet_of_this_run
from tests.deploy.manifests import (
    OVERLAYS,
    Object,
    cairn_servers,
    named,
    objects,
    of_kind,
    pod_spec,
)
from tests.deploy.pki import certificates

DEPLOY_DOC = repo_root() / "docs" / "deploy.md"
# The pod the test's calls come from, as docs/deploy.md describes a client.
CLIENT = policies.Pod("team-a", {"cairn.dev/client": "true"})
PROMETHEUS = policies.Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
_SUBNETS = (f"{subnet_of_this_run().rsplit('.', 1)[0]}.{n}" for n in itertools.count(1))
NOISY = {"warning", "error", "critical"}
# The startup probe's try by which a server answers SERVING: the probes find one
# SERVING on the second or third (2-4 s after its start, two cores shared by every pod).
SERVING_BY_TRY = 4


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def _secret(namespace: str, name: str, data: dict[str, str], kind: str = "Opaque") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def documented_secrets(namespace: str, tls: dict[str, str]) -> list[Object]:
    """The Secrets docs/deploy.md's production recipe creates, with its values (the
    TLS Secret with certificates made here)."""
    text = DEPLOY_DOC.read_text().replace("\\\n", " ")
    made = []
    for match in re.finditer(r"create secret generic (\S+)((?:\s+--from-literal=\S+)+)", text):
        literals = re.findall(r"--from-literal=([\w.-]+)=(\S+)", match.group(2))
        data = {key: value.strip("'\"") for key, value in literals}
        made.append(_secret(namespace, match.group(1), data))
    for match in re.finditer(r"create secret tls (\S+)", text):
        data = {"tls.crt": tls["tls.crt"], "tls.key": tls["tls.key"]}
        made.append(_secret(namespace, match.group(1), data, "kubernetes.io/tls"))
    return made


def documented_key_command() -> tuple[str, str, list[str]]:
    """Deployment, container and command of docs/deploy.md's first-key bootstrap."""
    text = DEPLOY_DOC.read_text().replace("\\\n", " ")
    command = r"kubectl -n \S+ exec deploy/(\S+) -c (\S+) --\s+(cairn keys create[^\n]*)"
    match = re.search(command, text)
    assert match, "docs/deploy.md no longer shows how to create the first key"
    return match.group(1), match.group(2), match.group(3).split()


def _stand_in(database_url: str, s3_endpoint: str) -> Callable[[str, str], str]:
    def stand_in(key: str, value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            return database_url
        if key == "CAIRN_S3_ENDPOINT":
            return s3_endpoint
        if key == "CAIRN_S3_SECURE":
            return "false"  # moto speaks plain HTTP
        return value

    return stand_in


async def _fresh_database(postgres_url: str) -> str:
    name = f"k8s_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))


@dataclass
class Deployment:
    overlay: str
    cluster: Cluster
    tls: dict[str, str] | None
    seconds_to_ready: float
    key: str  # the first admin key, made as docs/deploy.md says


def _tls_for(found: list[Object], subnet: str, namespace: str) -> dict[str, str]:
    services = [s["metadata"]["name"] for s in of_kind(found, "Service")]
    names = [f"{s}.{namespace}.svc" for s in services]
    names += [f"{s}.{namespace}.svc.cluster.local" for s in services]
    addresses = [f"{subnet}.{n}" for n in range(1, 255)]  # every pod and Service here
    return certificates(names, addresses)


async def deploy(
    found: list[Object],
    workdir: Path,
    postgres_url: str,
    s3_endpoint: str,
    only: set[str] | None = None,
) -> tuple[Cluster, dict[str, str] | None]:
    """Applies the objects: the Secrets the docs create where the overlay makes none,
    the Services, then the Job and every Deployment at once (their init containers
    racing the Job for the migration lock), until every pod is ready."""
    namespace = next(o for o in found if o["kind"] == "Namespace")["metadata"]["name"]
    subnet = next(_SUBNETS)
    tls = None
    if not of_kind(found, "Secret"):
        tls = _tls_for(found, subnet, namespace)
        found = [*found, *documented_secrets(namespace, tls)]
    stand_in = _stand_in(await _fresh_database(postgres_url), s3_endpoint)
    cluster = Cluster(found, stand_in, workdir, subnet, CLIENT)
    await cluster.serve_services()
    try:
        async with asyncio.TaskGroup() as group:
            if only is None:
                for job in of_kind(found, "Job"):
                    group.create_task(cluster.run_job(job))
            for deployment in cairn_servers(found):
                if only is None or deployment["metadata"]["name"] in only:
                    group.create_task(cluster.run_deployment(deployment))
    except BaseExceptionGroup as failed:
        await cluster.close()
        raise failed.exceptions[0] from None
    return cluster, tls


def documented_port() -> int:
    """The port docs/deploy.md tells clients to dial each Service at."""
    text = DEPLOY_DOC.read_text().replace("\n", " ")
    match = re.search(r"Each service has a Service of its own \([^)]*port (\d+)\)", text)
    assert match, "docs/deploy.md no longer says which port the Services have"
    return int(match.group(1))


def _client(cluster: Cluster, tls: dict[str, str] | None, key: str | None) -> cairn.Client:
    """Through the Services at the port docs/deploy.md gives, as a pod of the cluster
    would connect: the tracking one by a dns:/// target, as docs/deploy.md suggests
    for the headless Service."""
    port = documented_port()
    return cairn.Client(
        f"dns:///{cluster.service_address('cairn-tracking', port)}",
        service_addresses={
            "registry": cluster.service_address("cairn-registry", port),
            "artifacts": cluster.service_address("cairn-artifacts", port),
        },
        user_token=key,
        **_security(tls),
    )


def _security(tls: dict[str, str] | None) -> dict[str, Any]:
    """TLS with the test CA where the overlay serves it, plaintext elsewhere."""
    return {"custom_ca": tls["ca.crt"].encode()} if tls else {"is_secure": False}


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
    async with _client(cluster, deployed.tls, deployed.key) as client:
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


async def test_a_headless_service_reaches_its_pods_at_its_port(deployed: Deployment) -> None:
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
            f"ipv4:{addresses}", user_token=deployed.key, **_security(deployed.tls)
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
    async with _client(deployed.cluster, deployed.tls, deployed.key) as client:
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


class HeldBack(io.RawIOBase):
    """An upload's source whose third read waits until let go: by then the server has
    accepted the upload's header and received its first chunk."""

    SIZE = 3 * CHUNK

    def __init__(self) -> None:
        self.reads = 0
        self.under_way = threading.Event()
        self.go = threading.Event()
        self._data = io.BytesIO(bytes(range(256)) * (self.SIZE // 256))

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 3:
            self.under_way.set()
            self.go.wait(30)
        return self._data.read(size)


async def _upload_across(
    cluster: Cluster, deployed: Deployment, pod: Pod
) -> tuple[ObjectInfo, tuple[float, dict[str, int]]]:
    """An upload through the artifacts Service, SIGTERM to the pod while it is under
    way, then the rest of it sent."""
    source = HeldBack()
    async with _client(cluster, deployed.tls, deployed.key) as client:
        path = f"shutdown/{uuid.uuid4().hex}"
        upload = asyncio.ensure_future(client.artifacts.upload(path, source))
        await asyncio.to_thread(source.under_way.wait, 30)
        terminated = asyncio.ensure_future(cluster.terminate(pod))
        await eventually(lambda: _logged(pod, "shutting down"), what="the server told to stop")
        source.go.set()
        return await upload, await terminated


def _logged(pod: Pod, event: str) -> bool:
    return any(f'"event": "{event}"' in p.output() for p in pod.processes.values())


# A mistake in the manifests fails the tier: one Deployment (tracking) of the dev
# overlay, mutated, deployed and called through its Service.


def _tracking(found: list[Object]) -> Object:
    return named(found, "Deployment", "cairn-tracking")


def _main(found: list[Object]) -> Object:
    (container,) = pod_spec(_tracking(found))["containers"]
    return container


def _env(found: list[Object], name: str) -> Object:
    (variable,) = [e for e in _main(found)["env"] if e["name"] == name]
    return variable


def misspell_an_env_name(found: list[Object]) -> None:
    _env(found, "CAIRN_DATABASE_URL")["name"] = "CAIRN_DATABASE_URI"


def misspell_a_config_map_key(found: list[Object]) -> None:
    (config,) = [
        c for c in of_kind(found, "ConfigMap") if c["metadata"]["name"].startswith("cairn-config")
    ]
    config["data"]["CAIRN_HEALTH_ADDR"] = config["data"].pop("CAIRN_HEALTH_ADDRESS")


def name_a_missing_secret_key(found: list[Object]) -> None:
    _env(found, "CAIRN_DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"] = "uri"


def misname_the_probed_service(found: list[Object]) -> None:
    _main(found)["startupProbe"]["grpc"]["service"] = "cairn.tracking.v1.Tracking"


def move_the_grpc_port(found: list[Object]) -> None:
    (port,) = [p for p in _main(found)["ports"] if p["name"] == "grpc"]
    port["containerPort"] = 50052


def mistype_the_command(found: list[Object]) -> None:
    _main(found)["args"] = ["serve", "trackin"]


def move_the_service_port(found: list[Object]) -> None:
    """Every documented client dials 50051: the Service must have that port."""
    ports = named(found, "Service", "cairn-tracking")["spec"]["ports"]
    (grpc_port,) = [p for p in ports if p["name"] == "grpc"]
    grpc_port["port"] = 50052


MUTATIONS: list[tuple[Callable[[list[Object]], None], str]] = [
    (misspell_an_env_name, r"no setting reads \['CAIRN_DATABASE_URI'\]"),
    (misspell_a_config_map_key, r"no setting reads \['CAIRN_HEALTH_ADDR'\]"),
    (name_a_missing_secret_key, r"couldn't find key uri in secret cairn-database"),
    (misname_the_probed_service, r"asks for 'cairn.tracking.v1.Tracking'"),
    (move_the_grpc_port, r"service cairn-tracking:50051 -> cairn-tracking-0: .*50052"),
    (mistype_the_command, r"exited 2"),
    (move_the_service_port, r"nothing answers at the Service's .*:50051: .*Connection refused"),
]


async def _answered_through_the_service(cluster: Cluster) -> None:
    """A call through the tracking Service that a server answers (without a key, it
    answers UNAUTHENTICATED). Raises PodFailed, saying where the connection ended,
    when nobody answers."""
    async with _client(cluster, None, None) as client:
        try:
            with pytest.raises(UnauthenticatedError):
                await client.tracking.search_experiments(timeout=10)
        except UnavailableError as error:
            if cluster.refused:
                raise PodFailed(f"refused: {cluster.refused}") from None
            raise PodFailed(f"nothing answers at the Service's address: {error}") from None


@pytest.mark.parametrize(("mutate", "failure"), MUTATIONS, ids=[m.__name__ for m, _ in MUTATIONS])
async def test_a_mistake_in_the_manifests_fails_the_tier(
    mutate: Callable[[list[Object]], None],
    failure: str,
    tmp_path: Path,
    postgres_url: str,
    s3_endpoint: str,
) -> None:
    found = objects("dev")
    mutate(found)
    with pytest.raises(PodFailed, match=failure):
        cluster, _ = await deploy(found, tmp_path, postgres_url, s3_endpoint, {"cairn-tracking"})
        try:
            await _answered_through_the_service(cluster)
        finally:
            await cluster.close()


async def test_the_same_deployment_unmutated_passes(
    tmp_path: Path, postgres_url: str, s3_endpoint: str
) -> None:
    """The control of the mutations: the same tracking Deployment as rendered serves."""
    found = objects("dev")
    cluster, _ = await deploy(found, tmp_path, postgres_url, s3_endpoint, {"cairn-tracking"})
    try:
        await _answered_through_the_service(cluster)
    finally:
        await cluster.close()
