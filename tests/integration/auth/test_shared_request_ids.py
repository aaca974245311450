"""A request id two callers send: the registry tells them apart by their keys."""

from __future__ import annotations

import pytest

import cairn
from cairn._clients import versioned_artifacts
from cairn.exceptions import InvalidArgumentError
from tests.integration.auth.conftest import World


async def test_a_caller_refused_an_id_another_made_a_version_under_keeps_its_files(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers create the same version under one id at once: the second looked for
    it before the first made it, was then refused (REQUEST_ID_REUSED: another caller's
    id), and removed the directory the first's acknowledged version names."""

    def registry(who: str) -> cairn.ModelRegistryAPIClient:
        return cairn.ModelRegistryAPIClient.insecure_connection(
            "127.0.0.1", world.port, world.keys[who], project=world.project
        )

    async with registry("admin") as first, registry("editor") as second:
        made: list[versioned_artifacts.ActiveArtifact] = []
        look = versioned_artifacts._version_naming

        async def the_first_lands_after_the_seconds_look(registering, message):
            found = await look(registering, message)
            if registering is second and not made:
                made.append(await create(first))
            return found

        def create(who: cairn.ModelRegistryAPIClient):
            return who.create_artifact("ds", "dataset", {"k": 1}, files=b"data", request_id="j1")

        monkeypatch.setattr(
            versioned_artifacts, "_version_naming", the_first_lands_after_the_seconds_look
        )
        with pytest.raises(InvalidArgumentError) as refused:
            await create(second)
        assert refused.value.reason == "REQUEST_ID_REUSED"
        assert await made[0].files() == ["data"]
