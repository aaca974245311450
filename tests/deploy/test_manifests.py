"""The Kubernetes manifests and the Dockerfile, checked offline: every overlay renders,
validates strictly for a current Kubernetes, passes checkov and hadolint, and keeps the
invariants the deployment relies on."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from cairn_server import catalog
from cairn_server.common import config as config_module
from cairn_server.common import database
from cairn_server.common.config import Config, env_name
from cairn_server.common.health import LIVENESS
from cairn_server.common.server import STOP_MARGIN_SECONDS
from tests.conftest import repo_root
from tests.deploy.manifests import (
    BIN,
    OVERLAYS,
    WORKLOADS,
    cairn_servers,
    containers,
    objects,
    of_kind,
    pod_labels,
    pod_spec,
    rendered,
)
from tests.deploy.policies import Pod, allowed, outside, selects

KUBERNETES_VERSION = "1.34.0"
CHECKOV = repo_root() / ".venv-checkov" / "bin" / "checkov"
GRPC_PORT = int(Config().listen_address.rpartition(":")[2])


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_overlay_validates_strictly(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(manifest)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_overlay_passes_checkov(overlay: str, tmp_path: Path) -> None:
    assert CHECKOV.exists(), "checkov is missing: 'make test' installs it into .venv-checkov"
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered(overlay))
    result = subprocess.run(
        [str(CHECKOV), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "--compact"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_every_skipped_check_is_named_and_justified(overlay: str) -> None:
    for obj in objects(overlay):
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_K8S_\d+=\S.{10,}", value), (
                    obj["metadata"]["name"],
                    value,
                )


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), str(repo_root() / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_container_is_limited_and_hardened(overlay: str) -> None:
    for workload in of_kind(overlay, *WORKLOADS):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where


def test_no_pod_takes_service_links(overlay: str) -> None:
    """A Service named cairn-artifact-direct in the namespace gave every container
    CAIRN_ARTIFACT_DIRECT_PORT=tcp://..., which the server read as its setting and
    refused: every pod spec turns service links off (clients find Services by DNS)."""
    for workload in of_kind(overlay, *WORKLOADS):
        assert pod_spec(workload).get("enableServiceLinks") is False, workload["metadata"]["name"]


def config_data(overlay: str) -> dict[str, str]:
    (config,) = [
        c for c in of_kind(overlay, "ConfigMap") if c["metadata"]["name"].startswith("cairn-config")
    ]
    return dict(config["data"])


def config_value(overlay: str, key: str) -> str:
    return str(config_data(overlay)[key])


def test_probes_ask_the_health_of_each_servers_own_service(overlay: str) -> None:
    """Startup and readiness follow the server's service, which follows the database;
    liveness asks for the name only a shutdown turns NOT_SERVING, so an outage of the
    database takes pods out of their Services without restarting them."""
    names = {spec.name: spec.full_name for spec in catalog.SERVICES.values()}
    probe_port = int(config_value(overlay, "CAIRN_HEALTH_ADDRESS").rpartition(":")[2])
    servers = cairn_servers(overlay)
    assert sorted(
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in servers
    ) == sorted(names)
    for deployment in servers:
        component = deployment["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        (server,) = [c for c in pod_spec(deployment)["containers"] if c["name"] == component]
        assert server["args"] == ["serve", component]
        assert probe_port in {p["containerPort"] for p in server["ports"]}
        for probe in ("startupProbe", "readinessProbe"):
            assert server[probe]["grpc"] == {"port": probe_port, "service": names[component]}, probe
        assert server["livenessProbe"]["grpc"] == {"port": probe_port, "service": LIVENESS}


def test_services_expose_the_listen_port_as_grpc(overlay: str) -> None:
    servers = {d["metadata"]["name"]: d for d in cairn_servers(overlay)}
    services = [
        s
        for s in of_kind(overlay, "Service")
        if s["metadata"]["name"].removesuffix("-headless") in servers
    ]
    assert len(services) == 2 * len(servers)
    for service in services:
        (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_port["appProtocol"] == "grpc"
        deployment = servers[service["metadata"]["name"].removesuffix("-headless")]
        ports = {
            p["name"]: p["containerPort"]
            for c in pod_spec(deployment)["containers"]
            for p in c.get("ports", [])
        }
        assert ports[grpc_port["targetPort"]] == GRPC_PORT


def test_termination_grace_outlasts_the_servers_own(overlay: str) -> None:
    """The server's stop may last past its grace with the database out of reach: the
    cancels of the calls it cut, its background work's margin, then the pool's close,
    twice POOL_CLOSE_SECONDS. 30 s was a second short of that, and the kubelet's kill
    would cut the close."""
    grace = float(config_value(overlay, "CAIRN_SHUTDOWN_GRACE_SECONDS"))
    longest = (
        grace + database.CANCEL_SEND_SECONDS + STOP_MARGIN_SECONDS + 2 * database.POOL_CLOSE_SECONDS
    )
    for deployment in cairn_servers(overlay):
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > longest


def test_a_rollout_outlasts_the_migration_it_waits_for(overlay: str) -> None:
    """Each server's init container waits for the migration Job (up to its deadline)
    before the server starts (up to its startup probe's budget): Kubernetes' default
    deadline of a rollout, 10 minutes, reported an upgrade whose migration took longer
    as failed."""
    [job] = [j for j in of_kind(overlay, "Job") if j["metadata"]["name"] == "cairn-migrate"]
    for deployment in cairn_servers(overlay):
        probe = pod_spec(deployment)["containers"][0]["startupProbe"]
        start = probe["periodSeconds"] * probe["failureThreshold"]
        deadline = deployment["spec"].get("progressDeadlineSeconds", 600)
        assert deadline > job["spec"]["activeDeadlineSeconds"] + start, deployment["metadata"]


def test_an_autoscaled_deployment_names_no_replica_count(overlay: str) -> None:
    """kubectl apply sets a Deployment's count from its manifest: 3 in prod scaled a
    service the HPA had taken to 20 back to 3 at every upgrade."""
    found = objects(overlay)
    scaled = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(found, "HorizontalPodAutoscaler")
    }
    assert scaled == {d["metadata"]["name"] for d in cairn_servers(overlay)}
    for deployment in cairn_servers(overlay):
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_spreads_count_only_usable_nodes_and_each_rollout_apart(overlay: str) -> None:
    """Counted over every node, a tainted one the pods cannot use (a control plane, a
    GPU node) held the spread at one pod a node: strict in prod, a rolling update's
    surge pod could never be placed."""
    for deployment in cairn_servers(overlay):
        for spread in pod_spec(deployment)["topologySpreadConstraints"]:
            assert spread.get("nodeTaintsPolicy") == "Honor", deployment["metadata"]["name"]
            assert spread.get("matchLabelKeys") == ["pod-template-hash"]


def test_every_cairn_variable_exists_in_the_configuration_table(overlay: str) -> None:
    known = {env_name(f.name) for f in dataclasses.fields(Config)}
    used = set()
    for config in of_kind(overlay, "ConfigMap"):
        used |= {k for k in config.get("data", {}) if k.startswith("CAIRN_")}
    for workload in of_kind(overlay, *WORKLOADS):
        used |= {
            e["name"]
            for c in containers(workload)
            for e in c.get("env", [])
            if e["name"].startswith("CAIRN_")
        }
    assert used and used <= known, used - known


def test_servers_require_api_keys(overlay: str) -> None:
    # The image listens on 0.0.0.0, where a server without keys refuses to start.
    env = {"CAIRN_LISTEN_ADDRESS": "0.0.0.0:50051"}
    env.update({k: v for k, v in config_data(overlay).items() if k.startswith("CAIRN_")})
    for deployment in cairn_servers(overlay):
        for container in pod_spec(deployment)["containers"]:
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            assert config_module.load(env=env).auth == "api_key"


def test_production_commits_no_secret_values() -> None:
    assert of_kind("prod", "Secret") == []
    referenced = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for w in of_kind("prod", *WORKLOADS)
        for c in containers(w)
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    assert referenced == {"cairn-database", "cairn-s3"}


def test_production_serves_tls_from_the_tls_secret() -> None:
    cert = config_value("prod", "CAIRN_TLS_CERT_FILE")
    key = config_value("prod", "CAIRN_TLS_KEY_FILE")
    for deployment in cairn_servers("prod"):
        spec = pod_spec(deployment)
        (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "cairn-tls"
        (mount,) = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == "tls"]
        assert cert.startswith(mount["mountPath"] + "/") and key.startswith(
            mount["mountPath"] + "/"
        )


def test_every_pod_is_covered_by_a_network_policy(overlay: str) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    for workload in of_kind(overlay, *WORKLOADS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
            for p in policies
        ), workload["metadata"]["name"]


def _server_pods(overlay: str) -> list[Pod]:
    return [
        Pod(
            namespace=d["metadata"]["namespace"],
            labels=d["spec"]["template"]["metadata"]["labels"],
        )
        for d in cairn_servers(overlay)
    ]


def test_the_network_policies_admit_the_clients_the_docs_describe(overlay: str) -> None:
    """docs/deploy.md: a client pod carrying cairn.dev/client=true, in any namespace,
    reaches every server's gRPC port; a pod without the label does not."""
    policies = of_kind(overlay, "NetworkPolicy")
    client = Pod(namespace="team-a", labels={"cairn.dev/client": "true"})
    stranger = Pod(namespace="team-a", labels={"app": "notebook"})
    for server in _server_pods(overlay):
        assert allowed(policies, client, server, GRPC_PORT), server.labels
        assert not allowed(policies, stranger, server, GRPC_PORT), server.labels
        assert not allowed(policies, client, server, 9090), server.labels


def test_only_the_artifact_service_reaches_the_object_store(overlay: str) -> None:
    """docs/deploy.md: the servers reach DNS and PostgreSQL; the artifact service, which
    alone receives the S3 keys, S3 (443, or MinIO's 9000) too. Every server reached S3."""
    policies = of_kind(overlay, "NetworkPolicy")
    elsewhere = outside("s3")
    for server in _server_pods(overlay):
        reached = {port for port in (5432, 443, 9000) if allowed(policies, server, elsewhere, port)}
        component = server.labels["app.kubernetes.io/component"]
        assert reached == ({5432, 443, 9000} if component == "artifacts" else {5432}), component


def test_every_selector_selects_the_pods_it_is_for(overlay: str) -> None:
    """What the API server and the controllers would find: a workload's selector
    matches its own pod template; a Service, PodDisruptionBudget and spread constraint
    select the pods of their component."""
    found = objects(overlay)
    workloads = of_kind(found, *WORKLOADS)
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if "selector" in workload["spec"]:
            assert selects(workload["spec"]["selector"], labels), workload["metadata"]["name"]
        for spread in pod_spec(workload).get("topologySpreadConstraints", []):
            assert selects(spread["labelSelector"], labels), workload["metadata"]["name"]
    for obj in of_kind(found, "Service", "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector if obj["kind"] == "PodDisruptionBudget" else {"matchLabels": selector}
        chosen = [w for w in workloads if selects(selector, pod_labels(w))]
        assert len(chosen) == 1, obj["metadata"]["name"]
