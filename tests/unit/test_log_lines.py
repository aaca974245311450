"""The server's log in JSON: one object a line, the dependencies' lines included."""

import json
import subprocess
import sys

# A dependency's warning with a traceback, as asyncpg's pool logs on each failed
# reconnection while the database is away, between two lines of the server's own.
_LOGGING = """
import logging
from cairn_server.common import logs

logs.configure("info", "json")
logs.get("cairn.test").info("before")
try:
    raise ConnectionRefusedError("refused")
except OSError:
    logging.getLogger("asyncpg.pool").warning("reconnecting; retrying", exc_info=True)
logs.get("cairn.test").info("after")
"""


def test_a_dependencys_traceback_stays_within_its_json_line() -> None:
    """asyncpg's tracebacks came out as plain text, many lines each, among the JSON."""
    done = subprocess.run(
        [sys.executable, "-c", _LOGGING], capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["before", "reconnecting; retrying", "after"]
    warning = lines[1]
    assert warning["level"] == "warning" and warning["logger"] == "asyncpg.pool"
    assert "ConnectionRefusedError: refused" in warning["exception"]
    assert all("timestamp" in line for line in lines)
