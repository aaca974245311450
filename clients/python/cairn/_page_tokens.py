"""The check every list's walk makes of the page tokens a server answers.

Its own module, apart from the types package: the transport checks tokens too, and the
types package re-exports RunOperations, which is built on the transport."""

from __future__ import annotations

from .exceptions import UnknownError


def check_token_is_new(token: str | None, sent: set[str]) -> None:
    """Raises PAGE_TOKEN_REPEATED when a list answers a token it was sent before: read
    on, the pages would go round for ever."""
    if token and token in sent:
        raise UnknownError(
            "the server answered a page token it was sent before, so the pages would go "
            "round for ever; the server, or a proxy before it, is at fault, unless one "
            "Pager is walked by two tasks or threads at once (walk it from one at a time)",
            reason="PAGE_TOKEN_REPEATED",
        )
