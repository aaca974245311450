"""An overlay as rendered, deployed here (tests/deploy/cluster.py) with only what
points outside the machine stood in for: the database URL by a fresh database of the
test PostgreSQL, the S3 endpoint by moto, the TLS Secret by certificates made here; and
a client of it as docs/deploy.md describes one."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import cairn
from tests.conftest import repo_root
from tests.deploy import policies
from tests.deploy.cluster import Cluster, subnet_of_this_run
from tests.deploy.manifests import Object, cairn_servers, of_kind
from tests.deploy.pki import certificates

DEPLOY_DOC = repo_root() / "docs" / "deploy.md"
# The pod the test's calls come from, as docs/deploy.md describes a client.
CLIENT = policies.Pod("team-a", {"cairn.dev/client": "true"})
_SUBNETS = (f"{subnet_of_this_run().rsplit('.', 1)[0]}.{n}" for n in itertools.count(1))


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


def documented_client(
    cluster: Cluster, tls: dict[str, str] | None, key: str | None
) -> cairn.Client:
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
        **security(tls),
    )


def security(tls: dict[str, str] | None) -> dict[str, Any]:
    """TLS with the test CA where the overlay serves it, plaintext elsewhere."""
    return {"custom_ca": tls["ca.crt"].encode()} if tls else {"is_secure": False}
