"""A mistake in the manifests fails the deployment tier: one Deployment (tracking) of
the dev overlay, mutated, deployed and called through its Service at the documented
port; and the same Deployment unmutated passes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.exceptions import UnauthenticatedError, UnavailableError
from tests.deploy.cluster import Cluster, PodFailed
from tests.deploy.deployment import deploy, documented_client
from tests.deploy.manifests import Object, named, objects, of_kind, pod_spec


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


def _write_in_an_init_container(found: list[Object], path: str) -> None:
    """An init container as hardened as the migrations one, whose Python writes a file
    at path (os.path.expanduser'd) outside every volume."""
    spec = pod_spec(_tracking(found))
    scratch = copy.deepcopy(spec["initContainers"][0])
    scratch.update(
        name="scratch", args=["-c", f"import os; open(os.path.expanduser({path!r}), 'w')"]
    )
    scratch["command"] = ["python"]
    spec["initContainers"].append(scratch)


def write_to_the_root_filesystem(found: list[Object]) -> None:
    """The image has no WORKDIR: a relative path is under /, which is read-only."""
    _write_in_an_init_container(found, "written")


def write_to_home(found: list[Object]) -> None:
    _write_in_an_init_container(found, "~/written")


# As the container's user a write is refused (EACCES); in a cluster, by the read-only
# root filesystem (EROFS). A tier running as root ran its pods as root, and both passed.
REFUSED_WRITE = r"init scratch exited 1:[\s\S]*(PermissionError: \[Errno 13\]|\[Errno 30\])"

MUTATIONS: list[tuple[Callable[[list[Object]], None], str]] = [
    (misspell_an_env_name, r"no setting reads \['CAIRN_DATABASE_URI'\]"),
    (misspell_a_config_map_key, r"no setting reads \['CAIRN_HEALTH_ADDR'\]"),
    (name_a_missing_secret_key, r"couldn't find key uri in secret cairn-database"),
    (misname_the_probed_service, r"asks for 'cairn.tracking.v1.Tracking'"),
    (move_the_grpc_port, r"service cairn-tracking:50051 -> cairn-tracking-0: .*50052"),
    (mistype_the_command, r"exited 2"),
    (move_the_service_port, r"nothing answers at the Service's .*:50051: .*Connection refused"),
    (write_to_the_root_filesystem, REFUSED_WRITE),
    (write_to_home, REFUSED_WRITE),
]


async def _answered_through_the_service(cluster: Cluster) -> None:
    """A call through the tracking Service that a server answers (without a key, it
    answers UNAUTHENTICATED). Raises PodFailed, saying where the connection ended,
    when nobody answers."""
    async with documented_client(cluster, None, None) as client:
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


def _service(name: str, component: str, port: int) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "cairn-dev"},
        "spec": {
            "selector": {"app.kubernetes.io/component": component},
            "ports": [{"name": "http", "port": port, "targetPort": port}],
        },
    }


async def test_a_service_named_like_a_setting_stops_no_pod(
    tmp_path: Path, postgres_url: str, s3_endpoint: str
) -> None:
    """Someone's Service named cairn-artifact-direct in the namespace: with service
    links on, the kubelet gave every container CAIRN_ARTIFACT_DIRECT_PORT=tcp://...,
    which the server reads as its setting, and the Job, every init container and every
    server exited 2 ("is not a valid int")."""
    found = [*objects("dev"), _service("cairn-artifact-direct", "artifacts", 8080)]
    cluster, _ = await deploy(found, tmp_path, postgres_url, s3_endpoint)
    try:
        await _answered_through_the_service(cluster)
    finally:
        await cluster.close()
