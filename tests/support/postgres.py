"""A throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

One cluster per test session: ``initdb`` into a fresh temporary directory, ``postgres`` on
127.0.0.1 at a free port (no Unix socket outside that directory), removed when the session ends.
Each test gets its own database in it (``new_database``), so tests never see each other's rows.

``initdb`` and ``postgres`` refuse to run as root: as root (CI, this machine) the cluster runs as
the ``postgres`` system user the package creates (``nobody`` when there is none), and the
temporary directory belongs to that user. Durability is switched off (fsync, synchronous
commit): a test database is thrown away, and the disk is shared with the rest of the suite.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import procs, tools

PACKAGE = "postgresql"
_LIB = Path("/usr/lib/postgresql")
SUPERUSER = "acefleet_test"
START_TIMEOUT_S = 60.0


def bin_dir() -> Path:
    """The newest installed server's bin directory (Debian puts initdb/postgres there, off PATH)."""
    versions = sorted(
        (p for p in _LIB.glob("*/bin") if (p / "initdb").is_file() and (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(tools.missing("PostgreSQL server (initdb, postgres)", PACKAGE))
    return versions[-1]


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root; None: run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


@dataclass
class Cluster:
    """A running server; ``url(db)`` is the SQLAlchemy asyncpg URL of one of its databases."""

    root: Path
    port: int
    password: str
    proc: subprocess.Popen[bytes]
    user: pwd.struct_passwd | None
    bin: Path

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser (over TCP with the password) and return stdout."""
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({sql!r}): {done.stderr.strip()}")
        return done.stdout

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its name."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test's pool may still hold a connection that a failed teardown left open.
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            # SIGINT: "fast" shutdown (ends sessions, no wait for clients to disconnect).
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Cluster:
    """initdb a new cluster in a temporary directory and start it on a free loopback port."""
    binaries = bin_dir()
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="acefleet-pg-"))
    data = root / "data"
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    pwfile.chmod(0o600)
    # As root: drop to the user (and none of root's supplementary groups) for both programs.
    uid, gid = (user.pw_uid, user.pw_gid) if user else (None, None)
    groups: list[int] | None = [] if user else None
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
    if user is not None:
        env["HOME"] = str(root)
    init = subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=False,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    pwfile.unlink()
    port = procs.free_port()
    log_file = (root / "postgres.log").open("wb")
    if user is not None:
        os.chown(root / "postgres.log", user.pw_uid, user.pw_gid)
    proc = subprocess.Popen(
        [
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={root}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=32MB",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
        start_new_session=True,  # a Ctrl-C of pytest must not reach it before we stop it
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    log_file.close()
    cluster = Cluster(root=root, port=port, password=password, proc=proc, user=user, bin=binaries)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if not cluster.alive():
            log = cluster.log_path.read_text(errors="replace")
            cluster.stop()
            raise RuntimeError(f"postgres exited at start:\n{log}")
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=False,
        )
        if ready.returncode == 0:
            return cluster
        if time.monotonic() > deadline:
            log = cluster.log_path.read_text(errors="replace")
            cluster.stop()
            raise RuntimeError(f"postgres did not accept connections in time:\n{log}")
        time.sleep(0.1)
