"""The Kubeflow Model Registry client's documentation (the seed), run as its users run
it: its code blocks in order, `model_registry` replaced by `cairn`, the clients made at
module level and used inside `asyncio.run(...)`, against a `cairn serve` process over
TLS that requires API keys (the seed's `mr_client` is a secure connection with a token).

The seed stores its code with the line breaks collapsed, so the blocks are written here
with their line breaks and a test proves each is the seed's text word for word. What is
not the seed's own is the glue the seed asks for ("wrap them in an async function"): the
async function, the names a block uses but no block defines (`another_version`, `mv`:
registered first, so the queries have something to find), and the checks of what came
back. The placeholders "server-address" and "port" become the served address; the CA is
given as the system roots (`GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`), as `custom_ca` is
commented out in the seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import repo_root
from tests.e2e.conftest import ServerProcess, served_with_keys
from tests.integration.test_tls import _certificate, _write

pytestmark = pytest.mark.e2e

SEED = repo_root().parent / "shared" / "seeds" / "004_d9193b1d782affb6.txt"

CONNECT = """
from cairn.core import ModelRegistryAPIClient

insecure_mr_client = ModelRegistryAPIClient.insecure_connection(
    "server-address", "port",
    # optionally, you can identify yourself
    # user_token=os.environ["MY_TOKEN"]
)

mr_client = ModelRegistryAPIClient.secure_connection(
    "server-address", "port",
    user_token=os.environ["MY_TOKEN"]  # this is necessary on a secure connection
    # optionally, use a custom_ca
    # custom_ca=os.environ["MY_CERT"]
)
"""

REGISTER = """
from cairn.types import RegisteredModel, ModelVersion, ModelArtifact
from cairn.utils import s3_uri_from

async def register_a_model():
    model = await mr_client.upsert_registered_model(
        RegisteredModel(
            name="HAL",
            owner="me ",
        )
    )
    assert model.id  # this should be valid now

    # we need a registered model to associate the version to
    version = await mr_client.upsert_model_version(
        ModelVersion(
            name="9000",
            author="Mr. Tom A.I.",
            external_id="HAL-9000",
        ),
        model.id
    )
    assert version.id

    # we need a version to associate a trained model to
    trained_model = await mr_client.upsert_model_artifact(
        ModelArtifact(
            name="HAL-core",
            uri=s3_uri_from("build/onnx/hal.onnx", "cool-bucket"),
            model_format_name="onnx",
            model_format_version="1",
            storage_key="secret_secret",
        ),
        version.id
    )
    assert trained_model.id
"""

DOC_ARTIFACT = """
from cairn.types import DocArtifact

readme = await mr_client.upsert_model_version_artifact(
    DocArtifact(
        name="README",
        uri="https://github.com/my-org/my-model/blob/main/README.md",
        description="Model information"
    ),
    version.id
)
"""

BY_ID = """
new_model = await mr_client.upsert_registered_model(RegisteredModel("new_model"))

maybe_new_model = await mr_client.get_registered_model_by_id(new_model.id)

assert maybe_new_model == new_model  # True
"""

EXTERNAL_IDS = """
trained_model = ModelArtifact(
    name="my_model_name",
    uri="resource_URI",
    description="Model description",
    external_id="unique_reference"
)

# As a version is a context, we can have the same external_id as the above
version = ModelVersion(
    name="v1.0",
    author="model author",
    external_id="unique_reference"
)

# Registering this will cause an error!
# model = RegisteredModel(
#     name="my_model_name",
#     external_id="unique_reference", # this wouldn't be unique
# )

model = RegisteredModel(
    name="my_model_name",
    external_id="another_unique_reference"
)
"""

BY_PARAMS = """
# We can get the model artifact associated to a version
another_trained_model = await mr_client.get_model_artifact_by_params(name="my_model_name", model_version_id=another_version.id)

# Or by its unique identifier
trained_model = await mr_client.get_model_artifact_by_params(external_id="unique_reference")

# Same thing for a version
version = await mr_client.get_model_version_by_params(external_id="unique_reference")

# Or for a model
model = await mr_client.get_registered_model_by_params(external_id="another_unique_reference")

# We can also get a version by its name and associated model id
version = await mr_client.get_model_version_by_params(version="v1.0", registered_model_id="x")

# And we can get a model by simply calling its name
model = await mr_client.get_registered_model_by_params(name="my_model_name")
"""  # noqa: E501

LISTS = """
models = await mr_client.get_registered_models()

versions = await mr_client.get_model_versions("registered_model_id")

# We can get a list of the first 20 model artifacts
all_model_artifacts = await mr_client.get_model_artifacts()
"""

LIST_OPTIONS = """
from cairn.types import ListOptions

options = ListOptions(limit=50)

first_50_models = await mr_client.get_registered_models(options)

# By default we get ascending order
options = ListOptions.order_by_creation_time(is_asc=False)

last_50_models = await mr_client.get_registered_models(options)
"""

PAGER = """
from cairn.types import Pager

models = Pager(mr_client.get_registered_models)

async for model in models:
    ...
"""

PAGER_PARTIAL = """
model_version_artifacts = Pager(lambda o: mr_client.get_model_version_artifacts(mv.id, o))
"""

PAGER_OPTIONS = """
reverse_model_version_artifacts = model_version_artifacts.order_by_creation_time().descending().limit(100)
"""  # noqa: E501

NEXT_PAGE = """
page = await reverse_model_version_artifacts.next_page()
"""

CREATE_OBJECTS = """
from cairn.types import ModelArtifact, ModelVersion, RegisteredModel

trained_model = ModelArtifact(
    name="model-exec",
    uri="resource_URI",
    description="Model description",
    model_format_name="onnx",
    model_format_version="1",
)

version = ModelVersion(
    name="v1.0",
    author="model author",
)

model = RegisteredModel(
    name="model",
    owner="team",
)
"""

BLOCKS = [
    CONNECT,
    REGISTER,
    DOC_ARTIFACT,
    BY_ID,
    EXTERNAL_IDS,
    BY_PARAMS,
    LISTS,
    LIST_OPTIONS,
    PAGER,
    PAGER_PARTIAL,
    PAGER_OPTIONS,
    NEXT_PAGE,
    CREATE_OBJECTS,
]


def _words(text: str) -> str:
    return " ".join(text.split())


def _seed_blocks() -> list[str]:
    return [_words(b) for b in re.findall(r"```py(.*?)```", SEED.read_text(), re.S)]


def test_every_block_here_is_the_seeds_word_for_word() -> None:
    seed = _seed_blocks()
    ours = [_words(block.replace("cairn", "model_registry")) for block in BLOCKS]
    assert ours == seed


def _indented(block: str) -> str:
    return textwrap.indent(textwrap.dedent(block), "    ")


# The glue: what the seed leaves to the reader, and checks of what came back.
SCRIPT = f"""
import asyncio
import os

{CONNECT}
{REGISTER}

async def main():
    global version
    await register_a_model()
    version = await mr_client.get_model_version_by_params(external_id="HAL-9000")
{_indented(DOC_ARTIFACT)}
    assert readme.id and readme.description == "Model information"
{_indented(BY_ID)}
{_indented(EXTERNAL_IDS)}
    model = await mr_client.upsert_registered_model(model)
    another_version = await mr_client.upsert_model_version(version, model.id)
    await mr_client.upsert_model_artifact(trained_model, another_version.id)
{_indented(BY_PARAMS)}
    assert another_trained_model == trained_model
    assert trained_model.external_id == "unique_reference"
    assert version is None  # no model has the id "x"
    assert model.external_id == "another_unique_reference"
{_indented(LISTS)}
    assert [m.name for m in models] == ["HAL", "new_model", "my_model_name"]
    assert list(versions) == []
    assert {{a.name for a in all_model_artifacts}} == {{"HAL-core", "my_model_name"}}
{_indented(LIST_OPTIONS)}
    assert [m.name for m in last_50_models] == ["my_model_name", "new_model", "HAL"]
{_indented(PAGER)}
    mv = await mr_client.get_model_version_by_params(external_id="HAL-9000")
{_indented(PAGER_PARTIAL)}
{_indented(PAGER_OPTIONS)}
{_indented(NEXT_PAGE)}
    assert [a.name for a in page] == ["README", "HAL-core"]
    hal = [a for a in page if a.name == "HAL-core"][0]
    assert hal.uri == "s3://cool-bucket/build/onnx/hal.onnx", hal.uri

asyncio.run(main())

def types():
{_indented(CREATE_OBJECTS)}
    assert (trained_model.id, version.id, model.id) == (None, None, None)

types()

async def again():
    # A second asyncio.run, a second loop: the module-level client still works.
    assert (await mr_client.get_registered_model_by_params(name="HAL")).owner == "me "

asyncio.run(again())
"""


@pytest.fixture(scope="module")
def tls_served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str, Path]]:
    """A served process with TLS (a certificate for localhost) requiring API keys; the
    admin key and the CA file."""
    data_dir = tmp_path_factory.mktemp("kubeflow")
    ca = _certificate("kubeflow seed CA", None, ca=True)
    ca_file, _ = _write(data_dir, "ca", *ca)
    cert_file, key_file = _write(data_dir, "server", *_certificate("localhost", ca, ca=False))
    tls = {"CAIRN_TLS_CERT_FILE": str(cert_file), "CAIRN_TLS_KEY_FILE": str(key_file)}
    with served_with_keys(data_dir, user="hal", env=tls) as (server, key):
        yield server, key, ca_file


def test_the_seeds_examples_run_as_written(tls_served: tuple[ServerProcess, str, Path]) -> None:
    server, key, ca_file = tls_served
    port = server.address.rsplit(":", 1)[1]
    code = SCRIPT.replace('"server-address", "port"', f'"localhost", "{port}"')
    env = {
        **os.environ,
        "MY_TOKEN": key,
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(ca_file),
    }
    for name in ("AWS_S3_BUCKET", "AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr + code
    assert result.stdout == ""
