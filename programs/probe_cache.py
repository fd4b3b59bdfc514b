"""A persistent, multi-writer-safe cache of probe answers: a SQLite file (WAL mode) on one machine, or a table in
a PostgreSQL database (the optimisation study's) shared by workers on several machines.

Every write is one transaction, so a killed process leaves either the whole chunk or none; concurrent writers of
the same key agree (an answer is a function of its key), so an upsert keeps one row per key.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from programs.types import Answer, InputError, database_url, first_line, masked_url

DEFAULT_CACHE = Path(".selfx-cache") / "probe.sqlite"
TABLE = "answers"  # the name older caches were created with: they stay valid


def cache_key(*parts: str) -> str:
    """A stable key from its parts (backend, model, program fingerprint, mode, text)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_url(location: str | Path) -> str:
    """The SQLAlchemy URL of a cache location: a file path (SQLite) or a database URL."""
    text = str(location)
    if "://" in text:
        return database_url(text)
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class ProbeCache:
    def __init__(self, location: str | Path = DEFAULT_CACHE) -> None:
        self.location = str(location)
        self._lock = threading.Lock()
        url = cache_url(location)
        self._table = sa.Table(TABLE, sa.MetaData(), sa.Column("key", sa.String(64), primary_key=True),
                               sa.Column("answer", sa.Text, nullable=False))
        try:
            sqlite = url.startswith("sqlite")
            self._engine = sa.create_engine(url, connect_args={"timeout": 60} if sqlite else {}, pool_pre_ping=True)
            if sqlite:
                sa.event.listen(self._engine, "connect", _sqlite_wal)
            self._table.create(self._engine, checkfirst=True)
            with self._engine.connect() as connection:
                connection.execute(sa.select(sa.func.count()).select_from(self._table)).scalar()
        except Exception as exc:  # SQLAlchemy's errors (corrupt file, refused connection, unknown driver)
            raise InputError(f"probe cache {masked_url(self.location)} cannot be used ({type(exc).__name__}: "
                             f"{first_line(exc, 200)}): it only holds answers that can be asked again, so delete a "
                             "corrupt file or pass another cache (a file path or a postgresql+psycopg:// URL)") from exc
        self._insert = _upsert(self._engine.dialect.name, self._table)

    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        keys = list(keys)
        found: dict[str, Answer] = {}
        table = self._table
        with self._lock, self._engine.connect() as connection:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                for key, blob in connection.execute(table.select().where(table.c.key.in_(chunk))):
                    found[key] = Answer(**json.loads(blob))
        return found

    def put_many(self, items: dict[str, Answer]) -> None:
        if not items:
            return
        rows = [{"key": k, "answer": json.dumps(asdict(a), ensure_ascii=False)} for k, a in items.items()]
        with self._lock, self._engine.begin() as connection:
            connection.execute(self._insert, rows)

    def __len__(self) -> int:
        with self._lock, self._engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(self._table)).scalar())

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()


def _sqlite_wal(connection: Any, _record: Any) -> None:
    # several processes on one machine read and write the same file: WAL lets readers run beside a writer
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _upsert(dialect: str, table: Any) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE, in the database's own dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise InputError(f"probe cache: {dialect} is not supported; use a file path (SQLite) or a "
                         "postgresql+psycopg:// URL")
    statement = insert(table)
    return statement.on_conflict_do_update(index_elements=["key"], set_={"answer": statement.excluded.answer})
