"""protos/google/rpc is googleapis' status.proto and error_details.proto, for clients in
other languages: unchanged copies of what the pinned googleapis-common-protos ships, so
they say exactly what the Python client decodes. After a version bump, copy them again."""

from pathlib import Path

import pytest
from google.rpc import status_pb2

SHIPPED = Path(__file__).resolve().parents[2] / "protos" / "google" / "rpc"
GOOGLEAPIS = Path(status_pb2.__file__).parent


@pytest.mark.parametrize("name", ["status.proto", "error_details.proto"])
def test_google_rpc_protos_are_googleapis_own(name: str) -> None:
    shipped = (SHIPPED / name).read_text()
    assert shipped.startswith("// Copyright"), "keep googleapis' license header"
    assert shipped == (GOOGLEAPIS / name).read_text()
