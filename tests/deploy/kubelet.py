"""What the kubelet makes of a container in a rendered manifest: its command line, its
environment and its volumes, by Kubernetes' rules, and a process running it.

Only the container runtime is stood in for: the image's /usr/local/bin is the virtual
environment's bin, the read-only root filesystem is a directory nobody may write (the
container's user, switched to when the tier runs as root, cannot), a volume is a
directory under the pod's, and the pod's network namespace is a loopback address of its
own (a listen address of 0.0.0.0 binds that address)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.image import Image
from tests.deploy.manifests import BIN, Object

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class ContainerConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError: a ConfigMap, Secret or
    key the container refers to does not exist."""


@dataclass
class Namespace:
    """The objects of one namespace a kubelet reads: ConfigMaps, Secrets (decoded) and
    Services (for the service links every container gets)."""

    name: str
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    service_ips: dict[str, str] = field(default_factory=dict)
    services: dict[str, Object] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, found: list[Object]) -> Namespace:
        namespace = cls(name)
        for obj in found:
            kind, obj_name = obj["kind"], obj["metadata"]["name"]
            if kind == "ConfigMap":
                namespace.config_maps[obj_name] = dict(obj.get("data") or {})
            elif kind == "Secret":
                namespace.secrets[obj_name] = _secret_data(obj)
            elif kind == "Service":
                namespace.services[obj_name] = obj
        return namespace


def _secret_data(secret: Object) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def command(container: Object, image: Image, env: Mapping[str, str]) -> list[str]:
    """Kubernetes' rule: command replaces ENTRYPOINT, args replace CMD, and an
    ENTRYPOINT without args runs with CMD; $(VAR) expands from the container's env."""
    if "command" in container:
        argv = [*container["command"], *container.get("args", [])]
    else:
        argv = [*image.entrypoint, *container.get("args", image.cmd)]
    return [_expand(part, env) for part in argv]


def _expand(value: str, env: Mapping[str, str]) -> str:
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def service_links(namespace: Namespace) -> dict[str, str]:
    """The variables enableServiceLinks (on by default) gives every container of a pod:
    each Service with a cluster IP as NAME_SERVICE_HOST, NAME_SERVICE_PORT, NAME_PORT..."""
    env: dict[str, str] = {}
    for name, service in namespace.services.items():
        ip = namespace.service_ips.get(name)
        if ip is None or service["spec"].get("clusterIP") == "None":
            continue
        prefix = name.upper().replace("-", "_")
        ports = service["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{prefix}_PORT"] = f"tcp://{ip}:{ports[0]['port']}"
        for port in ports:
            number, protocol = port["port"], port.get("protocol", "TCP")
            if "name" in port:
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(number)
            base = f"{prefix}_PORT_{number}_{protocol}"
            env[base] = f"{protocol.lower()}://{ip}:{number}"
            env[f"{base}_PROTO"] = protocol.lower()
            env[f"{base}_PORT"] = str(number)
            env[f"{base}_ADDR"] = ip
    return env


def links_enabled(spec: Object) -> bool:
    return bool(spec.get("enableServiceLinks", True))


def environment(
    container: Object,
    image: Image,
    namespace: Namespace,
    pod: Mapping[str, str],
    bin_dir: Path = BIN,
    links: bool = True,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: the runtime's and the
    image's (and the service links when its pod's enableServiceLinks is not false),
    then what its manifest writes (later wins).

    Raises:
        ContainerConfigError: for a ConfigMap, Secret or key that does not exist.
    """
    env = runtime_environment(image, namespace, pod, bin_dir, links)
    env.update(written_environment(container, namespace, pod, env))
    return env


def runtime_environment(
    image: Image,
    namespace: Namespace,
    pod: Mapping[str, str],
    bin_dir: Path = BIN,
    links: bool = True,
) -> dict[str, str]:
    """What every container gets before its manifest speaks: the runtime's PATH (the
    image's /usr/local/bin is bin_dir here) and HOSTNAME, the image's ENV, the service
    links (unless its pod turned them off)."""
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOSTNAME": pod["name"], **image.env}
    if links:
        env.update(service_links(namespace))
    return env


def written_environment(
    container: Object, namespace: Namespace, pod: Mapping[str, str], before: Mapping[str, str]
) -> dict[str, str]:
    """The variables the container's manifest sets: envFrom in order, then env in order
    (later wins); $(VAR) expands from before and what came earlier. An env entry
    with neither value nor valueFrom is set to "".

    Raises:
        ContainerConfigError: for a ConfigMap, Secret or key that does not exist.
    """
    written: dict[str, str] = {}
    for source in container.get("envFrom", []):
        written.update(_env_from(source, namespace))
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            value = _value_from(variable["valueFrom"], namespace, pod)
            if value is not None:
                written[variable["name"]] = value
        else:
            written[variable["name"]] = _expand(variable.get("value", ""), {**before, **written})
    return written


def _env_from(source: Object, namespace: Namespace) -> dict[str, str]:
    prefix = source.get("prefix", "")
    if "configMapRef" in source:
        ref, store, kind = source["configMapRef"], namespace.config_maps, "ConfigMap"
    else:
        ref, store, kind = source["secretRef"], namespace.secrets, "Secret"
    if ref["name"] not in store:
        if ref.get("optional"):
            return {}
        raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
    # Keys that are not valid variable names are skipped (and reported as an event).
    return {prefix + k: v for k, v in store[ref["name"]].items() if _ENV_NAME.fullmatch(k)}


def _value_from(source: Object, namespace: Namespace, pod: Mapping[str, str]) -> str | None:
    if "fieldRef" in source:
        path = source["fieldRef"]["fieldPath"]
        fields = {
            "metadata.name": pod["name"],
            "metadata.namespace": namespace.name,
            "status.podIP": pod["ip"],
        }
        return fields[path]
    if "configMapKeyRef" in source:
        ref, store, kind = source["configMapKeyRef"], namespace.config_maps, "configmap"
    elif "secretKeyRef" in source:
        ref, store, kind = source["secretKeyRef"], namespace.secrets, "secret"
    else:
        raise ContainerConfigError(f"unsupported valueFrom {sorted(source)}")
    data = store.get(ref["name"])
    if data is None or ref["key"] not in data:
        if ref.get("optional"):
            return None
        missing = (
            f'{kind} "{ref["name"]}" not found'
            if data is None
            else f"couldn't find key {ref['key']} in {kind} {ref['name']}"
        )
        raise ContainerConfigError(missing)
    return data[ref["key"]]


def volumes(spec: Object, namespace: Namespace, root: Path) -> dict[str, Path]:
    """Each volume of the pod as a directory under root: emptyDir empty, secret and
    configMap with a file per key (or per item).

    Raises:
        ContainerConfigError: for a Secret or ConfigMap that does not exist (the pod
            stays in ContainerCreating).
    """
    made = {}
    for volume in spec.get("volumes", []):
        directory = root / "volumes" / volume["name"]
        directory.mkdir(parents=True)
        if "secret" in volume:
            source, name = namespace.secrets, volume["secret"]["secretName"]
            _fill(directory, source, name, volume["secret"], "secret")
        elif "configMap" in volume:
            source, name = namespace.config_maps, volume["configMap"]["name"]
            _fill(directory, source, name, volume["configMap"], "configmap")
        elif "emptyDir" in volume:
            directory.chmod(0o777)  # as the kubelet makes one: any user of the pod writes
        else:
            raise ContainerConfigError(f"unsupported volume {volume['name']}")
        made[volume["name"]] = directory
    return made


def _fill(
    directory: Path, store: dict[str, dict[str, str]], name: str, volume: Object, kind: str
) -> None:
    if name not in store:
        raise ContainerConfigError(f'{kind} "{name}" not found')
    data = store[name]
    items = volume.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] not in data:
            raise ContainerConfigError(f"couldn't find key {item['key']} in {kind} {name}")
        target = directory / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])


def mounted(value: str, mounts: Mapping[str, Path]) -> str:
    """A path inside the container, as the directory that holds it here."""
    for mount_path, directory in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(directory) + value[len(mount_path.rstrip("/")) :]
    return value


def in_pod_network(value: str, ip: str) -> str:
    """0.0.0.0:port binds every address of the pod, which here is its own address."""
    return re.sub(r"^0\.0\.0\.0:", f"{ip}:", value)


@dataclass(frozen=True)
class User:
    """Whom a container's process runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def user(spec: Object, container: Object, image: Image) -> User:
    """The securityContext's runAsUser and runAsGroup (the container's over the pod's,
    else the image's USER), with the pod's fsGroup and supplementalGroups as the
    supplementary groups.

    Raises:
        ContainerConfigError: for runAsNonRoot with user 0, which the kubelet refuses.
    """
    pod_context = spec.get("securityContext") or {}
    context = {**pod_context, **(container.get("securityContext") or {})}
    image_uid, _, image_gid = image.user.partition(":")
    uid = int(context.get("runAsUser", image_uid))
    if uid == 0 and context.get("runAsNonRoot"):
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    groups = [pod_context["fsGroup"]] if "fsGroup" in pod_context else []
    groups += pod_context.get("supplementalGroups", [])
    return User(uid, int(context.get("runAsGroup", image_gid or 0)), tuple(groups))


def as_user(argv: list[str], user: User) -> list[str]:
    """argv run as the container's user where this process is root, whom no directory's
    mode stops (a tier that is not root cannot switch, and the modes stop it already).

    The process keeps CAP_DAC_READ_SEARCH: what stands in for the image's files may sit
    where the user could not look (a Python under /root, pytest's 0700 folders). Only
    reading is let through; writing still needs the user's own permission."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("the tier runs as root: it needs setpriv (util-linux) to run pods")
    groups = ",".join(map(str, user.groups))
    return [
        setpriv,
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        f"--groups={groups}" if groups else "--clear-groups",
        "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--",
        *argv,
    ]


@dataclass
class Process:
    """One container's process, its output in a file of the pod's."""

    name: str
    argv: list[str]
    log: Path
    process: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: dict[str, str], cwd: Path, user: User
    ) -> Process:
        log = cwd.parent / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *as_user(argv, user), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        return cls(name, argv, log, process)

    def exited(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def resolved_port(port: Any, container_ports: Mapping[str, int]) -> int:
    """A port given by number or by the name of a container port."""
    if isinstance(port, int):
        return port
    if port not in container_ports:
        raise ContainerConfigError(f"no container port named {port!r}")
    return container_ports[port]
