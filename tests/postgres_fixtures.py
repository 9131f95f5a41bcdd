"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a cluster in a temporary folder.

``postgres_server`` (session scope) runs initdb into a fresh folder, starts the server on 127.0.0.1 at a free
port with its unix socket in that folder, and stops it and removes the folder afterwards. As root the server
runs as the ``postgres`` user (PostgreSQL refuses root). ``new_database`` makes an empty database per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str = "adain"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="adain-pg-"))
    if os.geteuid() == 0:  # postgres will not run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", account.pw_name, "--"]
    data, log = root / "data", root / "server.log"
    server = PostgresServer(_free_port())

    def run(*cmd: str) -> None:
        result = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if result.returncode:
            log_text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}{log_text}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions")
        options = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            yield server
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")  # a throwaway cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: PostgresServer) -> str:
    """Create an empty database on ``server``; its URL."""
    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server.url().replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.url(name)
