"""Readies the embedded PostgreSQL's data directory and starts its server, before
pgserver adopts it, where pgserver's own start goes wrong.

pgserver takes any directory holding PG_VERSION for a finished cluster, and initdb
writes that file first: a first start killed during initdb left a cluster that no later
start could use. It takes a postmaster.pid naming any live process for a live server:
after a crash, a pid taken by another process (pids are few and reused in a container)
stopped every start. It stops the server when the last process using it exits, and a
process killed stays on its list for good. And its initdb and pg_ctl run in the caller's
process group, so a Ctrl-C meant for the server killed them halfway.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pgserver
import psutil
from pgserver import utils
from pgserver._commands import POSTGRES_BIN_PATH, initdb, pg_ctl  # type: ignore[attr-defined]

from . import logs
from .durable import sync_directory
from .service import Unservable

_log = logs.get("cairn.database")

# A cluster is built beside its directory, under this prefix, and renamed into place
# once initdb has finished (and synced it to disk).
_BUILDING = ".initialising-"
# A directory without PG_VERSION in the cluster's place is kept under this suffix.
_ASIDE = ".incomplete-"
# pgserver's list of the pids of the processes using the cluster (get_server's).
_USERS = ".handle_pids.json"
# As long as pg_ctl itself waits for a start (its -t), crash recovery included.
_START_SECONDS = 60


def start(pgdata: Path) -> None:
    """Leaves pgdata a finished cluster whose server is up, started in a session of its
    own so that a signal to the caller's process group leaves it be.

    Under pgserver's lock, which its get_server() takes too: no other process builds or
    starts a cluster meanwhile."""
    with pgserver.PostgresServer._lock:
        if _left_by_initdb(pgdata):
            raise Unservable(
                f"the embedded PostgreSQL in {pgdata} was never finished: the first start "
                "of an older Cairn was interrupted while creating it, so nothing is stored "
                "in it. Move it aside and start again"
            )
        user = _system_user()
        _initialise(pgdata, user)
        _forget_stale_pid_file(pgdata)
        _forget_gone_users(pgdata)
        if not _postmaster_alive(pgdata):
            _start_postmaster(pgdata, user)


def _system_user() -> str | None:
    """The user PostgreSQL runs as: as pgserver does, "pgserver" when running as root,
    which PostgreSQL refuses to run as."""
    if os.geteuid() != 0:
        return None
    utils.ensure_user_exists("pgserver")
    utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = 0o044
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | 0o011)
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return "pgserver"


def _left_by_initdb(pgdata: Path) -> bool:
    """Whether pgdata is a cluster initdb, killed in its last step, left in place (as
    Cairn did before it built clusters aside): the pid file of its single-user
    PostgreSQL stays, and the database "postgres", which every start connects to, was
    never made (its directory is base/5 since PostgreSQL 15)."""
    if not (pgdata / "PG_VERSION").exists() or (pgdata / "base" / "5").exists():
        return False
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return False
    single_user = first.startswith("-") and first[1:].isdigit()
    return single_user and not psutil.pid_exists(int(first[1:]))


def _initialise(pgdata: Path, user: str | None) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    for left in pgdata.parent.glob(f"{pgdata.name}{_BUILDING}*"):
        # An interrupted start's (none builds now, under the lock): it never served.
        _log.warning("unfinished embedded postgres cluster removed", path=str(left))
        shutil.rmtree(left, ignore_errors=True)
    if pgdata.exists() and any(pgdata.iterdir()):
        aside = pgdata.with_name(f"{pgdata.name}{_ASIDE}{time.strftime('%Y%m%dT%H%M%S')}")
        pgdata.rename(aside)
        _log.warning("directory without a PostgreSQL cluster moved aside", moved_to=str(aside))
    # A name of its own: an initdb whose server was killed alone may still write in the
    # directory it was given.
    building = Path(tempfile.mkdtemp(prefix=f"{pgdata.name}{_BUILDING}", dir=pgdata.parent))
    if user is not None:
        _hand_over(building, user)
    initdb(
        ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
        pgdata=building,
        user=user,
        start_new_session=True,
    )
    os.replace(building, pgdata)  # over the empty directory made to hold it
    sync_directory(pgdata.parent)
    _log.info("embedded postgres cluster initialised", data_dir=str(pgdata))


def _hand_over(directory: Path, user: str) -> None:
    import pwd

    utils.ensure_prefix_permissions(directory)
    entry = pwd.getpwnam(user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)


def _forget_stale_pid_file(pgdata: Path) -> None:
    """Removes a postmaster.pid whose pid another process now holds: PostgreSQL's own
    check (the pid alive) cannot tell, pgserver's neither. The process is not signalled."""
    pid_file = pgdata / "postmaster.pid"
    pid = _pid_in(pid_file)
    if pid is None:
        return
    holder = _unrelated_holder(pid, pgdata)
    if holder is not None:
        pid_file.unlink(missing_ok=True)
        _log.warning("stale postmaster.pid removed", pid=pid, held_by=holder)


def forget_gone_users(pgdata: Path) -> None:
    """Takes off pgserver's list of the processes using the cluster (the last of them to
    exit stops it) those that no longer run: a process killed never took itself off, and
    then no exit stopped the cluster again, each finding it still on the list. Run by a
    start, and at exit before pgserver's own look at the list. A pid another process took
    since keeps the cluster up, as before; a list that cannot be read is taken for empty.
    """
    with pgserver.PostgresServer._lock:
        _forget_gone_users(pgdata)


def _forget_gone_users(pgdata: Path) -> None:
    users = pgdata / _USERS
    try:
        listed = json.loads(users.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        listed = None
    pids = listed if isinstance(listed, list) else []
    running = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
    if running == listed:
        return
    written = users.with_name(f"{_USERS}.{os.getpid()}")
    written.write_text(json.dumps(running))
    written.replace(users)
    gone = [pid for pid in pids if pid not in running]
    _log.warning("gone processes taken off the embedded PostgreSQL's users", pids=gone)


def _running(pid: int) -> bool:
    """Whether pid names a process that may use the cluster: any but one gone or a
    zombie (a process of another user, which psutil may not read, counts)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _unrelated_holder(pid: int, pgdata: Path) -> str | None:
    """What holds pid when it is certainly no PostgreSQL server of pgdata; None when it
    may be one (or nothing holds it, which pgserver sees itself)."""
    try:
        proc = psutil.Process(pid)
        name = proc.name()
    except psutil.Error:
        return None
    if name != "postgres":
        return name or f"pid {pid}"
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    served = _option(cmdline, "-D")
    if served is not None and Path(served).resolve() != pgdata.resolve():
        return f"the PostgreSQL of {served}"
    return None


def _option(cmdline: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmdline[:-1]):
        if arg == flag:
            return cmdline[i + 1]
    return None


def _pid_in(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    # Negative: the file of a single-user PostgreSQL (initdb runs one), as PostgreSQL reads it.
    return abs(pid) or None


def _postmaster_alive(pgdata: Path) -> bool:
    pid = _pid_in(pgdata / "postmaster.pid")
    return pid is not None and psutil.pid_exists(pid)


def _start_postmaster(pgdata: Path, user: str | None) -> None:
    """As pgserver starts it (socket only, no TCP), but in a session of its own."""
    if user is not None:
        _hand_over(pgdata, user)
    socket_dir = utils.find_suitable_socket_dir(pgdata, pgserver.PostgresServer.runtime_path)
    if user is not None and socket_dir != pgdata:
        utils.ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    waits = ["-w", "-t", str(_START_SECONDS)]
    no_tcp = ["-o", '-h ""', "-o", f"-k {socket_dir}"]
    pg_ctl(
        [*waits, *no_tcp, "-l", str(pgdata / "log"), "start"],
        pgdata=pgdata,
        user=user,
        timeout=_START_SECONDS + 10,
        start_new_session=True,
    )
