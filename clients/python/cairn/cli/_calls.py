"""Running a command's calls: one client, one event loop, errors as one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .._client import Client
from ..exceptions import CairnError
from ..profiles import ProfileError
from ..types import Pager
from ._connection import resolve

T = TypeVar("T")


def call(work: Callable[[Client], Awaitable[T]]) -> T:
    """Runs work with a client of this invocation's connection and returns its result.

    A CairnError (its status, reason and message), a bad profile or a bad value becomes
    click's one-line "Error: ..." on stderr and exit status 1, never a traceback.
    """
    ctx = click.get_current_context()
    try:
        connection = resolve(ctx)

        async def session() -> T:
            async with connection.client() as client:
                return await work(client)

        return asyncio.run(session())
    except (CairnError, ProfileError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None


async def collect(pager: Pager[Any], max_results: int | None) -> list[Any]:
    """Every item of a Pager, or the first max_results, asking for no more pages."""
    if max_results:
        pager.limit(min(max_results, 1000))
    items: list[Any] = []
    async for item in pager:
        items.append(item)
        if max_results and len(items) >= max_results:
            break
    return items
