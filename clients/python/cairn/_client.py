"""`cairn.Client`: every service over one channel, and Devo's client factories."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from ._clients.artifacts import ArtifactClient
from ._clients.auth import AuthClient
from ._clients.model_manager import ManagedModel, ModelManager
from ._clients.operations import OperationsClient
from ._clients.registry import ModelRegistryAPIClient
from ._clients.tracking import TrackingClient
from ._targets import parse
from ._transport import DEFAULT_PROJECT, DEFAULT_TIMEOUT, Transport
from .profiles import BEARER, STANDALONE, Profile, load_profile


class Client:
    """One connection to a Cairn server, with a client for each service on it.

    `tracking` (MLflow's calls), `registry` (Kubeflow's and MLflow's), `artifacts`,
    `auth` (ML cube's), `operations` (garbage collection, long-running operations)
    and `models` (Devo's, also as `add_model`, `get_model`,
    `find_model` and `get_models` on the client itself) share one channel, made on the
    first call in the loop that makes it, and one set of credentials. Services deployed
    apart get a channel each (`service_addresses`), and every call, a run artifact's
    too, goes to its service's.

    Args:
        server_address: a host name or address with or without its port (`host:port`,
            `[v6::addr]:port`), a URL (`https://host[:port]` connects over TLS,
            `http://host[:port]` without), or a gRPC target (`dns:///name[:port]`,
            `ipv4:addr[:port],...`, `unix:path`); every form is listed in
            docs/client.md. A port left unnamed is 443 with TLS, 50051 without.
        port: the TCP port, when server_address does not name one (an address naming
            another is refused).
        user_token: an API key (None: none sent).
        token_style: "bearer" sends `authorization: Bearer <key>`, "standalone"
            `x-api-key: <key>`; a Cairn server takes either.
        is_secure: TLS or not; by default, TLS unless the URL is `http://`. A URL
            whose scheme says otherwise is refused.
        custom_ca: path to (or bytes of) a PEM root certificate (None: the system roots);
            refused on a plaintext connection, as are client_cert and client_key.
        project: the project every call works in.
        timeout: default deadline of each call in seconds (None: no deadline).
        download_path: where `get_model`/`find_model` put files (Devo's downloader).
        client_cert: path to (or bytes of) a PEM client certificate, for mTLS.
        client_key: path to (or bytes of) its PEM private key.
        service_addresses: the address of each service served elsewhere than
            server_address, by name (`tracking`, `registry`, `artifacts`, `auth`), in
            the forms server_address takes (a URL's scheme must agree with the
            client's TLS); the port when it names none, the TLS setting and the
            credentials are the client's.

    Raises:
        ValueError: for an address of no form above, a port that is not a number from
            1 to 65535, two different ports, a URL scheme that contradicts is_secure,
            certificates without TLS, or an unknown service name.
    """

    def __init__(
        self,
        server_address: str,
        port: int | str | None = None,
        *,
        user_token: str | None = None,
        token_style: str = BEARER,
        is_secure: bool | None = None,
        custom_ca: str | bytes | None = None,
        project: str = DEFAULT_PROJECT,
        timeout: float | None = DEFAULT_TIMEOUT,
        download_path: str | os.PathLike[str] | None = None,
        client_cert: str | bytes | None = None,
        client_key: str | bytes | None = None,
        service_addresses: Mapping[str, str] | None = None,
    ) -> None:
        url_tls = parse(server_address).tls
        if url_tls is not None and is_secure is not None and url_tls != is_secure:
            scheme = "https" if url_tls else "http"
            raise ValueError(f"an {scheme}:// address with is_secure={is_secure}: choose one")
        secure = (url_tls is not False) if is_secure is None else is_secure
        if not secure and (custom_ca or client_cert or client_key):
            # Certificates given for a plaintext connection would be silently unused.
            raise ValueError("custom_ca, client_cert and client_key need a TLS connection")
        settings: dict[str, Any] = dict(
            project=project,
            user_token=user_token,
            timeout=timeout,
            token_style=token_style,
            service_addresses=service_addresses,
        )
        if secure:
            transport = Transport.secure(
                server_address,
                port,
                custom_ca=custom_ca,
                client_cert=client_cert,
                client_key=client_key,
                **settings,
            )
        else:
            transport = Transport.insecure(server_address, port, **settings)
        self._transport = transport
        self.tracking = TrackingClient(transport)
        self.registry = ModelRegistryAPIClient(transport)
        self.artifacts = ArtifactClient(transport)
        self.auth = AuthClient(transport)
        self.operations = OperationsClient(transport)
        self.models = ModelManager(self.registry, download_path or ".")

    @property
    def project(self) -> str:
        return self._transport.project

    # Devo's calls, on the client as Devo has them.

    async def add_model(
        self,
        name: str,
        engine: str,
        model_file: str | os.PathLike[str],
        description: str | None = None,
        force: bool = False,
    ) -> ManagedModel:
        """As `ModelManager.add_model` (Devo's `Client.add_model`)."""
        return await self.models.add_model(name, engine, model_file, description, force)

    async def get_model(self, name: str, download_file: bool | None = None) -> ManagedModel:
        """As `ModelManager.get_model` (Devo's)."""
        return await self.models.get_model(name, download_file)

    async def find_model(self, name: str, download_file: bool | None = None) -> ManagedModel | None:
        """As `ModelManager.find_model` (Devo's): None when there is no such model."""
        return await self.models.find_model(name, download_file)

    async def get_models(self) -> list[ManagedModel]:
        """As `ModelManager.get_models` (Devo's): every model of the project."""
        return await self.models.get_models()

    async def close(self) -> None:
        """Waits for the tracking writes started with synchronous=False before it was
        called, then closes the channel every service client shares (see
        TrackingClient.close)."""
        await self.tracking.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _split(server_address: str) -> tuple[str, int | None, bool | None]:
    """Host, port (None: not named) and TLS (None: no scheme says) of an address, in
    any form cairn._targets reads."""
    address = parse(server_address)
    return address.host, address.port, address.tls


def create_client_from_token(
    url: str,
    token: str,
    auth_type: str = STANDALONE,
    download_path: str | os.PathLike[str] | None = None,
    *,
    project: str = DEFAULT_PROJECT,
    custom_ca: str | bytes | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Client:
    """Devo's factory: a client of the server at url with an API key.

    Args:
        url: `https://host[:port]` (TLS; port 443 by default) or `http://host[:port]`
            (plaintext; port 50051 by default).
        token: the API key.
        auth_type: "standalone" (`x-api-key`, Devo's default) or "bearer".
        download_path: where `get_model`/`find_model` put files ("." when None).
        project: the project every call works in.
        custom_ca: a PEM root certificate for TLS (None: the system roots).
        timeout: default deadline of each call in seconds (30 as in Devo).
    """
    return Client(
        url,
        user_token=token,
        token_style=auth_type,
        custom_ca=custom_ca,
        project=project,
        timeout=timeout,
        download_path=download_path,
    )


def create_client_from_profile(
    profile: str = "default",
    path: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Client:
    """Devo's factory: a client from a named profile of the profile file.

    Args:
        profile: the section of the file.
        path: the file, or a directory holding profiles.ini; by default
            `$CAIRN_PROFILES`, else `~/.config/cairn/profiles.ini` (cairn.profiles).
        overrides: keyword arguments of `Client` (`timeout=45`) or keys of a profile
            (`token=...`, `url=...`) that win over the profile's values.

    Raises:
        cairn.profiles.ProfileError: when the file or profile is missing or invalid,
            with the overrides in place.
    """
    keys = {key: value for key, value in overrides.items() if key in _PROFILE_ONLY}
    arguments = {key: value for key, value in overrides.items() if key not in keys}
    return client_from_profile(load_profile(profile, path, overrides=keys), **arguments)


# The keys of a profile no keyword of Client names: given to the factory, they take the
# file's place before the profile is read (a `url=` was a TypeError of Client's).
_PROFILE_ONLY = frozenset(
    {"url", "host", "tls", "ca", "token", "auth_type", "registry_address", "artifacts_address"}
)


def client_from_profile(profile: Profile, **overrides: Any) -> Client:
    """A Client of a Profile already read."""
    settings: dict[str, Any] = dict(
        port=profile.port,
        user_token=profile.token,
        token_style=profile.token_style,
        is_secure=profile.tls,
        custom_ca=profile.ca,
        project=profile.project,
        timeout=profile.timeout,
        download_path=profile.download_path,
        service_addresses=dict(profile.service_addresses) or None,
    )
    return Client(profile.host, **{**settings, **overrides})
