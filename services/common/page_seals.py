"""Page tokens are sealed: a server signs every next_page_token it answers, and refuses a
page_token it did not sign.

paging.py writes a token from a page's last sort key and checks each value it reads
back, so an edited token cannot reach SQL with a wrong type or leave the caller's scope;
but without a seal an edited token would still be served, starting its page elsewhere
or ending a walk early. Sealed, any edit is refused (INVALID_PAGE_TOKEN).

A sealed token is `<token>.<seal>`: the seal is HMAC-SHA256 of the token under the key
of the service that made it, cut to 128 bits, in URL-safe base64 (which never holds a
dot). Each service keeps its key in its own schema (table `page_token_key`, made with a
random value by a migration), so every replica of a service signs and checks with the
same key and a token outlives a restart.

The interceptor seals at the call boundary, for every method whose request has a
page_token: no list can forget it, and servicers and stores see bare tokens only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from google.protobuf import descriptor_pool

from . import messages
from .paging import bad_token
from .service import ServiceSpec, Unservable

SEAL_BYTES = 16
SEPARATOR = "."

Handler = Callable[[Any, Any], Any]


def paged(method: str) -> bool:
    """Whether a method ("/package.Service/Method") takes a page_token."""
    found = messages.request_type(method)  # None: not described, no list of ours
    return found is not None and "page_token" in found.fields_by_name


def seal(key: bytes, token: str) -> str:
    """token with its seal; the empty token (no more pages) stays empty."""
    return f"{token}{SEPARATOR}{_mac(key, token)}" if token else ""


def opened(key: bytes, sealed: str) -> str:
    """The token a sealed one carries; raises INVALID_PAGE_TOKEN unless key sealed it."""
    if not sealed:
        return ""
    token, separator, mac = sealed.rpartition(SEPARATOR)
    # As bytes: compare_digest refuses str holding non-ASCII characters (TypeError).
    if not separator or not hmac.compare_digest(mac.encode(), _mac(key, token).encode()):
        raise bad_token(
            "page_token",
            "is not one this service issued: it was edited, or comes from another "
            "deployment or from before an upgrade (start again from the first page)",
        )
    return token


def _mac(key: bytes, token: str) -> str:
    digest = hmac.new(key, token.encode(), hashlib.sha256).digest()[:SEAL_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class PageSeals:
    """The page-token keys of a server's services, read when it starts."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    async def load(self, pool: asyncpg.Pool, services: Sequence[ServiceSpec]) -> None:
        """Reads the key of each service that has lists; raises Unservable for a service
        whose key is gone (deleted, where a new one is set by UPDATE: docs/deploy.md)."""
        for spec in services:
            methods = descriptor_pool.Default().FindServiceByName(spec.full_name).methods
            if not any(paged(f"/{spec.full_name}/{method.name}") for method in methods):
                continue
            key = await pool.fetchval(f'SELECT secret FROM "{spec.schema}".page_token_key')
            if key is None:
                raise Unservable(
                    f"{spec.schema}.page_token_key holds no key; give it one as "
                    "docs/deploy.md (Upgrades) says"
                )
            self._keys[spec.full_name] = key

    def sealing(self, method: str, behaviour: Handler) -> Handler:
        """behaviour, given the request's page_token opened and answering its
        next_page_token sealed, under the key of the method's service."""
        service = method.lstrip("/").partition("/")[0]

        async def call(request: Any, context: Any) -> Any:
            key = self._keys[service]
            request.page_token = opened(key, request.page_token)
            response = behaviour(request, context)
            if inspect.isawaitable(response):
                response = await response
            response.next_page_token = seal(key, response.next_page_token)
            return response

        return call
