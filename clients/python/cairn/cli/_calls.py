"""Running a command's calls: one client, one event loop, errors as one line."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import unquote

import click

from .._client import Client
from .._tables import on_one_line
from ..exceptions import CairnError, UnavailableError, UnimplementedError
from ..profiles import ProfileError
from ..types import Pager
from ._connection import Connection, resolve
from ._output import interrupts_noted

T = TypeVar("T")


class ProfileMistake(click.ClickException):
    """A profile that cannot be used: the user's setting, as a flag or a variable is, so
    a usage mistake (status 2) as theirs are. One line naming the file, section and key,
    without the usage text click adds to a mistake on the command line."""

    exit_code = click.UsageError.exit_code


class PartlyDone(Exception):
    """A command's failure after part of its work: the error, and what was done, said
    after it in the same one line (the points a sync sent before a journal failed)."""

    def __init__(self, error: CairnError, done: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.done = done


def call(work: Callable[[Client], Awaitable[T]]) -> T:
    """Runs work with a client of this invocation's connection and returns its result.

    A CairnError (its status, reason and message) or a bad value becomes click's
    one-line "Error: ..." on stderr and exit status 1, never a traceback; a profile
    that cannot be used the same line and status 2, a usage mistake.
    """
    try:
        connection = resolve(click.get_current_context())
    except ProfileError as error:
        raise ProfileMistake(on_one_line(str(error))) from None
    except (ValueError, OSError) as error:  # OSError: a profile file unread
        raise click.ClickException(on_one_line(str(error))) from None

    async def session() -> T:
        with interrupts_noted():
            async with connection.client() as client:
                return await work(client)

    try:
        return asyncio.run(session())
    except BrokenPipeError:  # a reader gone (`| head`): click ends quietly
        raise
    except PartlyDone as partly:
        raise click.ClickException(f"{_said(partly.error, connection)}; {partly.done}") from None
    except CairnError as error:
        raise click.ClickException(_said(error, connection)) from None
    except (ProfileError, ValueError, OSError) as error:
        # One line, and nothing a terminal acts on: a path given may hold either.
        raise click.ClickException(on_one_line(str(error))) from None


def _said(error: CairnError, connection: Connection) -> str:
    hint = _hint(error, connection)
    return f"{error}{f' ({hint})' if hint else ''}"


def _hint(error: CairnError, connection: Connection) -> str:
    """What to do about the commonest mistakes of connecting, which gRPC's own words
    (connections to all backends failing; Method not found!) do not say."""
    text = error.message
    if error.reason == "API_KEY_MISSING":
        return "give it with --api-key, CAIRN_API_KEY or a profile's token"
    if isinstance(error, UnimplementedError):
        return (
            "the server asked does not serve this service: give the address of one that "
            "does (--address, --registry-address, --artifacts-address)"
        )
    if not isinstance(error, UnavailableError) or error.reason:
        return ""
    # The address that failed, as gRPC names it (a service may be served apart).
    found = re.search(r"ipv[46]:(\S+?):? ", text)
    # gRPC writes an IPv6 address's brackets as %5B and %5D.
    where = unquote(found.group(1)) if found else f"{connection.host}:{connection.port}"
    if "WRONG_VERSION_NUMBER" in text:
        return f"{where} does not speak TLS: use http://, --no-tls or tls = false"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"{where}'s certificate is not trusted here: give its CA with --ca-file"
    # A plaintext hello a TLS server hangs up on: only while connecting. A connection
    # closed once made (a server gone mid-download: "Stream removed") says nothing of TLS.
    if "Socket closed" in text and _never_connected(text) and not connection.tls:
        return f"{where} may speak TLS: use https:// or --tls"
    if "Connection refused" in text or "failed to connect" in text.lower():
        return f"no server answers at {where}: is it running? check the address given"
    return ""


def _never_connected(text: str) -> bool:
    """Whether gRPC's message says no connection could be made (its words have been
    both of these), rather than that one made was lost."""
    return "Stream removed" not in text and (
        "connections to all backends failing" in text
        or "failed to connect to all addresses" in text
    )


async def pages(pager: Pager[T], max_results: int | None) -> AsyncIterator[list[T]]:
    """The pages of a Pager as they arrive, up to max_results items in all, asking for
    no more pages: a listing prints each page before it asks for the next, so that
    memory holds one page and the first lines appear at once."""
    if max_results:
        pager.limit(min(max_results, 1000))
    left = max_results
    while not pager.done:
        fetched = pager.next_page()
        page = list(await fetched if inspect.isawaitable(fetched) else fetched)
        if left is not None:
            page = page[:left]
            left -= len(page)
        yield page
        if left == 0:
            return
