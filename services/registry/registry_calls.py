"""What the registry servicer's mixins share: the stores they call, and a page's answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from ..common import answers, paging
from .store import artifacts, models, versions

Context: TypeAlias = grpc.aio.ServicerContext
M = TypeVar("M", bound=Message)
T = TypeVar("T")
R = TypeVar("R", bound=Message)


class RegistryCalls:
    """What the mixins of RegistryServicer call through: the stores and the bytes a page
    may hold, which RegistryServicer sets, and the answer of a page."""

    _models: models.ModelStore
    _versions: versions.VersionStore
    _artifacts: artifacts.ArtifactStore
    _page_bytes: int

    async def _answer(
        self,
        page: paging.ListPage[T],
        to_message: Callable[[T], M],
        entries: Callable[[T], int],
        respond: Callable[[list[M], str], R],
    ) -> R:
        """The answer of a page: its items converted, cut to fit one response, and
        respond(messages, next_page_token), built off the event loop when the page holds
        many entries (common/answers.py)."""

        def build() -> R:
            return respond(*paging.fitted(page, to_message, self._page_bytes))

        return await answers.built(sum(map(entries, page.items)), build)
