"""`cairn` against services deployed apart, each served by a process of its own: the
registry and artifact addresses come from flags, variables or a profile, which the
Python client's create_client_from_profile reads the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cairn
from tests.e2e.cli_helpers import as_json, environment, failed, ok
from tests.integration.test_deployed_apart import apart  # noqa: F401 (fixture)


async def _run_with_artifact(tracking_port: int, ports: dict[str, int], name: str) -> str:
    """A run holding notes/hello.txt, logged through the artifact service's own address."""
    async with cairn.Client(
        "127.0.0.1",
        tracking_port,
        is_secure=False,
        service_addresses={"artifacts": f"127.0.0.1:{ports['artifacts']}"},
    ) as client:
        experiment = await client.tracking.create_experiment(name)
        run_id = (await client.tracking.create_run(experiment)).info.run_id
        await client.tracking.log_text(run_id, "hello", "notes/hello.txt")
        return run_id


async def test_artifacts_and_models_of_services_served_apart(
    apart: dict[str, int],  # noqa: F811
    unique: str,
    tmp_path: Path,
) -> None:
    run_id = await _run_with_artifact(apart["tracking"], apart, f"cli-apart-{unique}")
    env = environment(tmp_path, CAIRN_ADDRESS=f"127.0.0.1:{apart['tracking']}")
    artifacts = f"127.0.0.1:{apart['artifacts']}"
    registry = f"127.0.0.1:{apart['registry']}"
    # The subprocesses run in threads: the servers answer on this test's event loop.
    alone = await asyncio.to_thread(failed, "artifacts", "list", "-r", run_id, env=env)
    assert "UNIMPLEMENTED" in alone  # the tracking server serves no artifacts

    listed = await asyncio.to_thread(
        as_json, "artifacts", "list", "-r", run_id, "--artifacts-address", artifacts, env=env
    )
    assert [a["path"] for a in listed] == ["notes/"]
    by_variable = {**env, "CAIRN_ARTIFACTS_ADDRESS": artifacts, "CAIRN_REGISTRY_ADDRESS": registry}
    listed = await asyncio.to_thread(
        as_json, "artifacts", "list", "notes", "-r", run_id, "--recursive", env=by_variable
    )
    assert [a["path"] for a in listed] == ["notes/hello.txt"]
    await asyncio.to_thread(ok, "models", "list", env=by_variable)


async def test_a_profile_places_the_services_for_the_cli_and_the_client(
    apart: dict[str, int],  # noqa: F811
    unique: str,
    tmp_path: Path,
) -> None:
    run_id = await _run_with_artifact(apart["tracking"], apart, f"profile-apart-{unique}")
    profiles = tmp_path / "profiles.ini"
    profiles.write_text(
        f"[apart]\nurl = http://127.0.0.1:{apart['tracking']}\n"
        f"registry_address = 127.0.0.1:{apart['registry']}\n"
        f"artifacts_address = 127.0.0.1:{apart['artifacts']}\n"
    )
    env = environment(tmp_path, CAIRN_PROFILES=str(profiles), CAIRN_PROFILE="apart")
    listed = await asyncio.to_thread(as_json, "artifacts", "list", "-r", run_id, env=env)
    assert [a["path"] for a in listed] == ["notes/"]
    await asyncio.to_thread(ok, "models", "list", env=env)

    async with cairn.create_client_from_profile("apart", profiles) as client:
        assert [a.path for a in await client.tracking.list_artifacts(run_id)] == ["notes"]
        await client.registry.create_registered_model(f"profile-apart-{unique}")
