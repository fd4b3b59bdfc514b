"""Real services for the scale-out test, started the way docs/scale-out.md tells users to: Debian's PostgreSQL
(initialised and started on 127.0.0.1 as the unprivileged ``postgres`` user when the tests run as root) and
``mlflow server`` with that database as its backend store."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.servers import free_port, served
from tests.conftest import require


def postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres(databases: tuple[str, ...]) -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (trust auth, user ``selfx``) with ``databases`` created; yields
    ``postgresql+psycopg://selfx@127.0.0.1:PORT`` and stops and removes the cluster on exit."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    require(initdb is not None and pg_ctl is not None, "PostgreSQL (apt-get install -y postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="selfx-pg-", dir="/tmp"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "selfx", "--auth=trust", "--no-sync"]), check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
                                 f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    base = f"postgresql+psycopg://selfx@127.0.0.1:{port}"
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            for name in databases:
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        yield base
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def mlflow_server(backend: str, artifacts: Path, timeout: float = 180.0) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with ``backend`` as its store and artifacts proxied to ``artifacts``; yields
    its URL (its job consumers are children and stop with it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with served([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
                 str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], f"{url}/health",
                artifacts.parent / "mlflow-server.log", what="mlflow server", timeout=timeout):
        yield url
