"""What the tier makes of a container before it runs it: its environment (by the
kubelet's rules, then moved onto this machine) and the connections its settings
imply. Nothing is started here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.deploy import kubelet, policies
from tests.deploy.cluster import Cluster, subnet_of_this_run
from tests.deploy.image import image
from tests.deploy.manifests import Object, named, objects, pod_spec

# Where CI clones the project: its virtual environment lives under /tmp, which every
# server pod mounts an emptyDir at.
VENV_UNDER_TMP = Path("/tmp/checkout/.venv/bin")


def _container(found: list[Object], deployment: str) -> Object:
    (container,) = pod_spec(named(found, "Deployment", deployment))["containers"]
    return container


async def _cluster(found: list[Object], workdir: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        found,
        lambda _, value: value,
        workdir,
        subnet_of_this_run(),
        policies.Pod("team-a"),
        bin_dir=VENV_UNDER_TMP,
    )
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Cluster]:
    found = objects("dev")
    _container(found, "cairn-tracking")["env"].append({"name": "TMPDIR", "value": "/tmp"})
    async for cluster in _cluster(found, tmp_path):
        yield cluster


async def test_a_virtual_environment_under_tmp_stays_on_the_path(dev: Cluster) -> None:
    """Only what the manifest writes is moved onto the pod's volumes: the runtime's
    PATH names this machine's virtual environment, under /tmp or not."""
    pod = dev._prepare(named(dev.objects, "Deployment", "cairn-tracking"), "cairn-tracking-0")
    env = dev.environment(pod, _container(dev.objects, "cairn-tracking"), dev.namespace)
    assert env["PATH"].split(":")[0] == str(VENV_UNDER_TMP)
    assert env["TMPDIR"] == str(pod.directory / "volumes" / "tmp")


def test_an_env_entry_without_value_is_set_empty() -> None:
    container = {"name": "c", "env": [{"name": "EMPTY"}, {"name": "AFTER", "value": "[$(EMPTY)]"}]}
    env = kubelet.environment(
        container, image(), kubelet.Namespace("ns"), {"name": "p", "ip": "127.0.0.2"}
    )
    assert (env["EMPTY"], env["AFTER"]) == ("", "[]")


def test_service_links_come_unless_the_pod_turns_them_off() -> None:
    """The tier gives every container of a pod the links Kubernetes does, so a Service
    named like a setting fails the pods that take them."""
    direct = {"metadata": {"name": "cairn-artifact-direct"}, "spec": {"ports": [{"port": 8080}]}}
    namespace = kubelet.Namespace("ns", services={"cairn-artifact-direct": direct})
    namespace.service_ips["cairn-artifact-direct"] = "10.96.0.12"
    pod = {"name": "p", "ip": "127.0.0.2"}
    linked = kubelet.environment({"name": "c"}, image(), namespace, pod)
    unlinked = kubelet.environment({"name": "c"}, image(), namespace, pod, links=False)
    assert linked["CAIRN_ARTIFACT_DIRECT_PORT"] == "tcp://10.96.0.12:8080"
    assert "CAIRN_ARTIFACT_DIRECT_PORT" not in unlinked


def test_a_container_runs_as_its_security_contexts_user() -> None:
    """The container's runAsUser over the pod's, the image's USER without either, the
    pod's fsGroup as a supplementary group; root refused under runAsNonRoot."""
    spec = {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 2000}}
    own = {"securityContext": {"runAsUser": 10002}}
    assert kubelet.user(spec, own, image()) == kubelet.User(10002, 10001, (2000,))
    assert kubelet.user({}, {}, image()) == kubelet.User(10001, 10001)
    with pytest.raises(kubelet.ContainerConfigError, match="runAsNonRoot"):
        kubelet.user({"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}, {}, image())


async def test_a_server_of_every_service_reaches_s3(tmp_path: Path) -> None:
    """`cairn serve` with no name serves artifacts too, so it reaches S3."""
    found = objects("dev")
    _container(found, "cairn-artifacts")["args"] = ["serve"]
    async for cluster in _cluster(found, tmp_path):
        artifacts = named(found, "Deployment", "cairn-artifacts")
        cluster._prepare(artifacts, "cairn-artifacts-0")
        cluster.record_dependencies()
        reached = {(c.what, c.port) for c in cluster.connections}
        assert ("s3", 9000) in reached
