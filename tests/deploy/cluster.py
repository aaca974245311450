"""A rendered overlay run on this machine as a cluster would run it: the migrate Job
and each Deployment's pod (init containers, then its container) as processes with
the environment the kubelet builds, each pod on a loopback address of its own, probed
as its manifest says; each Service a forwarder on an address of its own to the ready
pods it selects; every connection made through them recorded with the labels of both
ends, for the NetworkPolicies to judge.

One pod per Deployment: replicas, scheduling, the HPA and the network plugin's
enforcement are not simulated (the policies are evaluated, not enforced)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cairn_server import catalog
from cairn_server.common.config import Config, env_name
from cairn_server.common.config import load as load_settings
from tests.deploy import kubelet, policies
from tests.deploy.image import image
from tests.deploy.kubelet import ContainerConfigError, Namespace, Process
from tests.deploy.manifests import BIN, Object, pod_labels, pod_spec

SETTINGS = {env_name(f.name) for f in dataclasses.fields(Config)}
SERVING = health_pb2.HealthCheckResponse.SERVING


def named_ports(spec: Object) -> dict[str, int]:
    """The named container ports of a pod spec, which Services and policies may name."""
    return {
        p["name"]: p["containerPort"]
        for c in spec["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }


class PodFailed(AssertionError):
    """A pod that a cluster would leave failing: what failed, and the output."""


@dataclass
class Pod:
    name: str
    workload: Object
    ip: str
    directory: Path
    processes: dict[str, Process] = field(default_factory=dict)
    ready: bool = False
    serving_after: float | None = None  # seconds from the main container's start
    mounts: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return pod_labels(self.workload)

    @property
    def spec(self) -> Object:
        return pod_spec(self.workload)

    def container_ports(self) -> dict[str, int]:
        return named_ports(self.spec)

    def as_peer(self, namespace: str) -> policies.Pod:
        return policies.Pod(namespace, self.labels, self.container_ports())


@dataclass(frozen=True)
class Connection:
    source: policies.Pod
    target: policies.Pod
    port: int
    what: str


class Cluster:
    """One namespace of a rendered overlay, run here.

    Args:
        found: the rendered objects, Secrets created as the docs say included.
        stand_in: (key, value) of a Secret or ConfigMap entry to the value used here:
            what points outside this machine (a database, S3) replaced, the rest kept.
        workdir: where pods keep their directories and logs.
        subnet: the first three numbers of the loopback addresses of pods and Services.
        client: the pod the test's own calls come from.
        bin_dir: what stands in for the image's /usr/local/bin (the virtual
            environment's bin).
    """

    def __init__(
        self,
        found: list[Object],
        stand_in: Callable[[str, str], str],
        workdir: Path,
        subnet: str,
        client: policies.Pod,
        bin_dir: Path = BIN,
    ) -> None:
        self.objects = found
        self.bin_dir = bin_dir
        (ns,) = {o["metadata"]["namespace"] for o in found if "namespace" in o["metadata"]}
        self.written = Namespace.of(ns, found)
        self.namespace = Namespace.of(ns, found)
        for store in (self.namespace.secrets, self.namespace.config_maps):
            for data in store.values():
                data.update({k: stand_in(k, v) for k, v in data.items()})
        self.workdir = workdir
        self.subnet = subnet
        self.client = client
        self.pods: dict[str, Pod] = {}
        self.jobs: dict[str, list[Process]] = {}
        self.connections: list[Connection] = []
        self.refused: list[str] = []  # connections a Service could not forward, and why
        self._servers: list[asyncio.Server] = []
        self._next_ip = 10
        services = [o for o in found if o["kind"] == "Service"]
        for i, service in enumerate(services):
            if service["spec"].get("clusterIP") != "None":
                self.namespace.service_ips[service["metadata"]["name"]] = f"{subnet}.{200 + i}"

    # Addresses and the kubelet's view of a container

    def _ip(self) -> str:
        self._next_ip += 1
        return f"{self.subnet}.{self._next_ip}"

    def environment(self, pod: Pod, container: Object, namespace: Namespace) -> dict[str, str]:
        """The container's environment, run here: the paths its manifest writes under a
        volume's mountPath moved to that volume's directory (the runtime's and image's
        values name this machine's paths already, a virtual environment under /tmp
        included), and 0.0.0.0 made the pod's address."""
        fields = {"name": pod.name, "ip": pod.ip}
        links = kubelet.links_enabled(pod.spec)
        env = kubelet.runtime_environment(image(), namespace, fields, self.bin_dir, links)
        mounts = pod.mounts.get(container["name"], {})
        written = kubelet.written_environment(container, namespace, fields, env)
        env.update({k: kubelet.mounted(v, mounts) for k, v in written.items()})
        env = {k: kubelet.in_pod_network(v, pod.ip) for k, v in env.items()}
        # A home and a /tmp in the pod, unless the manifest names them: this machine's
        # would take writes that the container's read-only root refuses.
        root = pod.directory / "root"
        env.setdefault("HOME", str(root))
        env.setdefault("TMPDIR", str(mounts.get("/tmp", root)))
        return env

    def env_as_written(self, pod: Pod, container: Object) -> dict[str, str]:
        fields = {"name": pod.name, "ip": pod.ip}
        links = kubelet.links_enabled(pod.spec)
        return kubelet.environment(container, image(), self.written, fields, self.bin_dir, links)

    def _check_settings(self, pod: Pod, container: Object, env: dict[str, str]) -> None:
        """A CAIRN_ variable no setting reads is a misspelt one (the server ignores it);
        the service links' variables are the kubelet's, not the manifest's."""
        enabled = kubelet.links_enabled(pod.spec)
        links = set(kubelet.service_links(self.namespace)) if enabled else set()
        unread = sorted(k for k in env if k.startswith("CAIRN_") and k not in SETTINGS | links)
        if unread:
            raise PodFailed(f"{pod.name}/{container['name']}: no setting reads {unread}")

    def _prepare(self, workload: Object, name: str) -> Pod:
        pod = Pod(name, workload, self._ip(), self.workdir / name)
        root = pod.directory / "root"
        root.mkdir(parents=True)
        try:
            made = kubelet.volumes(pod.spec, self.namespace, pod.directory)
        except ContainerConfigError as error:
            raise PodFailed(f"{name}: {error}") from None
        for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            pod.mounts[container["name"]] = {
                m["mountPath"]: made[m["name"]] for m in container.get("volumeMounts", [])
            }
        root.chmod(0o555)  # readOnlyRootFilesystem: only volumes take writes
        self.pods[name] = pod
        return pod

    async def _start(self, pod: Pod, container: Object, name: str | None = None) -> Process:
        try:
            env = self.environment(pod, container, self.namespace)
            user = kubelet.user(pod.spec, container, image())
        except ContainerConfigError as error:
            raise PodFailed(f"{pod.name}/{container['name']}: {error}") from None
        self._check_settings(pod, container, env)
        argv = kubelet.command(container, image(), env)
        root = pod.directory / "root"
        process = await Process.start(name or container["name"], argv, env, root, user)
        pod.processes[name or container["name"]] = process
        return process

    # Workloads

    async def run_job(self, job: Object) -> None:
        """Runs the Job's pod to completion, again on failure (restartPolicy OnFailure)
        up to backoffLimit times."""
        name = job["metadata"]["name"]
        pod = self._prepare(job, f"{name}-pod")
        (container,) = pod.spec["containers"]
        attempts = self.jobs.setdefault(name, [])
        for attempt in range(job["spec"].get("backoffLimit", 6) + 1):
            process = await self._start(pod, container, f"{container['name']}-{attempt}")
            attempts.append(process)
            code = await process.wait()
            if code == 0:
                return
        raise PodFailed(f"job {name} failed {len(attempts)} times:\n{attempts[-1].output()}")

    async def run_deployment(self, deployment: Object) -> Pod:
        """Init containers one after another, then the containers, until ready."""
        pod = self._prepare(deployment, f"{deployment['metadata']['name']}-0")
        for container in pod.spec.get("initContainers", []):
            process = await self._start(pod, container)
            code = await process.wait()
            if code != 0:
                raise PodFailed(
                    f"{pod.name}: init {container['name']} exited {code}:\n{process.output()}"
                )
        started = time.monotonic()
        for container in pod.spec["containers"]:
            process = await self._start(pod, container)
            await self._probe_until_ready(pod, container, process)
        pod.serving_after = time.monotonic() - started
        pod.ready = True
        return pod

    async def _probe_until_ready(self, pod: Pod, container: Object, process: Process) -> None:
        """The startup probe at its period until it succeeds or fails failureThreshold
        times; then readiness and liveness once each."""
        startup = container.get("startupProbe")
        if startup is not None:
            await self._startup(pod, container, process, startup)
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is not None and await self._probe(pod, probe) != "SERVING":
                raise PodFailed(f"{pod.name}: {kind} failed:\n{process.output()}")

    async def _startup(self, pod: Pod, container: Object, process: Process, probe: Object) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        for _ in range(probe.get("failureThreshold", 3)):
            code = process.exited()
            if code is not None:
                raise PodFailed(
                    f"{pod.name}/{container['name']} exited {code}:\n{process.output()}"
                )
            status = await self._probe(pod, probe)
            if status == "SERVING":
                return
            if status == "SERVICE_UNKNOWN" and await self._probe(pod, probe, "") == "SERVING":
                # The server is up and will never know the name: a mistake, not a delay.
                raise PodFailed(
                    f"{pod.name}: the probe asks for {probe['grpc'].get('service')!r}, "
                    "which the server does not serve"
                )
            await asyncio.sleep(probe.get("periodSeconds", 10))
        raise PodFailed(f"{pod.name}: startupProbe failed:\n{process.output()}")

    async def _probe(self, pod: Pod, probe: Object, service: str | None = None) -> str:
        """A kubelet gRPC probe: Health/Check on the pod's port, plaintext."""
        port = kubelet.resolved_port(probe["grpc"]["port"], pod.container_ports())
        name = probe["grpc"].get("service", "") if service is None else service
        async with grpc.aio.insecure_channel(f"{pod.ip}:{port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name),
                    timeout=probe.get("timeoutSeconds", 1),
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return "SERVICE_UNKNOWN"
                return error.code().name
        return "SERVING" if reply.status == SERVING else "NOT_SERVING"

    async def exec(self, deployment: str, container: str, argv: list[str]) -> str:
        """`kubectl exec deploy/<name> -c <container> -- argv`: the command with the
        container's environment, in its pod; its standard output."""
        pod = self.pods[f"{deployment}-0"]
        (spec,) = [c for c in pod.spec["containers"] if c["name"] == container]
        env = self.environment(pod, spec, self.namespace)
        process = await asyncio.create_subprocess_exec(
            *kubelet.as_user(argv, kubelet.user(pod.spec, spec, image())),
            env=env,
            cwd=pod.directory / "root",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise PodFailed(f"exec {argv} exited {process.returncode}: {err.decode()}")
        return out.decode()

    # Services

    def service_address(self, name: str, port: int) -> str:
        """Where a client dials a Service at a port (the port its docs give, which the
        Service may not have)."""
        return f"{self.namespace.service_ips[name]}:{port}"

    async def serve_services(self) -> None:
        """A forwarder per ClusterIP Service port, to a ready pod it selects."""
        for name, service in self.namespace.services.items():
            ip = self.namespace.service_ips.get(name)
            if ip is None:
                continue
            for port in service["spec"]["ports"]:
                server = await asyncio.start_server(
                    functools.partial(self._forward, service, port), ip, port["port"]
                )
                self._servers.append(server)

    async def _forward(
        self,
        service: Object,
        port: Object,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        ready = self.endpoints(service)
        try:
            if not ready:
                raise ConnectionRefusedError("no ready endpoints")
            pod = ready[0]
            target = kubelet.resolved_port(
                port.get("targetPort", port["port"]), pod.container_ports()
            )
            source = self._peer(writer.get_extra_info("peername")[0])
            self.connections.append(
                Connection(
                    source,
                    pod.as_peer(self.namespace.name),
                    target,
                    f"service {service['metadata']['name']}:{port['port']}",
                )
            )
            up_reader, up_writer = await asyncio.open_connection(pod.ip, target)
        except (OSError, ContainerConfigError) as error:
            # What `kubectl get endpoints` plus a refused connection would show.
            self.refused.append(
                f"service {service['metadata']['name']}:{port['port']} -> "
                f"{ready[0].name if ready else '<no endpoints>'}: {error}"
            )
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def endpoints(self, service: Object) -> list[Pod]:
        """The ready pods a Service selects."""
        selector = {"matchLabels": service["spec"]["selector"]}
        return [p for p in self.pods.values() if p.ready and policies.selects(selector, p.labels)]

    def _peer(self, ip: str) -> policies.Pod:
        for pod in self.pods.values():
            if pod.ip == ip:
                return pod.as_peer(self.namespace.name)
        return self.client

    # What the pods reach outside the cluster's Services

    def record_dependencies(self) -> None:
        """The database connections each container makes (and the artifact server's
        S3 ones), to where its settings as written point (read as the server reads
        them): a Service of the namespace (its pods' labels) or outside."""
        for pod in self.pods.values():
            source = pod.as_peer(self.namespace.name)
            for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
                env = self.env_as_written(pod, container)
                settings = load_settings(env=env)
                if settings.database_url:
                    url = urlsplit(settings.database_url)
                    target, port = self._destination(url.hostname or "", url.port or 5432)
                    self.connections.append(Connection(source, target, port, "database"))
                argv = kubelet.command(container, image(), env)
                if "artifacts" in served(argv) and settings.artifact_backend == "s3":
                    host, _, given = settings.s3_endpoint.partition(":")
                    default = 443 if settings.s3_secure else 80
                    target, port = self._destination(host, int(given or default))
                    self.connections.append(Connection(source, target, port, "s3"))

    def _destination(self, host: str, port: int) -> tuple[policies.Pod, int]:
        name = host.split(".")[0]
        service = self.namespace.services.get(name)
        if service is None or host not in _service_names(name, self.namespace.name):
            return policies.outside(host), port
        selector = {"matchLabels": service["spec"]["selector"]}
        (workload,) = [
            o
            for o in self.objects
            if o["kind"] in {"Deployment", "StatefulSet"}
            and policies.selects(selector, pod_labels(o))
        ]
        ports = named_ports(pod_spec(workload))
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        target = kubelet.resolved_port(service_port.get("targetPort", port), ports)
        return policies.Pod(self.namespace.name, pod_labels(workload), ports), target

    # Shutdown

    async def terminate(self, pod: Pod) -> tuple[float, dict[str, int]]:
        """SIGTERM to each container; seconds until all exited (killed after
        terminationGracePeriodSeconds, as the kubelet does), and their exit codes."""
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        running = {n: p for n, p in pod.processes.items() if p.exited() is None}
        started = time.monotonic()
        for process in running.values():
            process.terminate()
        codes = {}
        for name, process in running.items():
            try:
                codes[name] = await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                await process.kill()
                codes[name] = -9
        pod.ready = False
        return time.monotonic() - started, codes

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for pod in self.pods.values():
            for process in pod.processes.values():
                await process.kill()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        # The pods' roots were read-only; the test's tmp_path cleanup needs them back.
        for pod in self.pods.values():
            (pod.directory / "root").chmod(0o755)

    def logs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every JSON log line of every process, with the process's pod/name."""
        for pod in self.pods.values():
            for name, process in pod.processes.items():
                for line in process.output().splitlines():
                    if line.startswith("{"):
                        with contextlib.suppress(json.JSONDecodeError):
                            yield f"{pod.name}/{name}", json.loads(line)


def served(argv: list[str]) -> set[str]:
    """The services `cairn serve [name...]` hosts, as the server picks them (no name
    or "all": every one); none for any other command."""
    if argv[1:2] != ["serve"]:
        return set()
    names = [a for a in argv[2:] if not a.startswith("-")]
    return {spec.name for spec in catalog.select(names)}


def _service_names(name: str, namespace: str) -> set[str]:
    return {
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    }


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def subnet_of_this_run() -> str:
    """Loopback addresses of this process's own (127/8 is all loopback on Linux)."""
    pid = os.getpid()
    return f"127.{100 + pid % 100}.{pid // 100 % 250}"
