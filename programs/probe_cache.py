"""A persistent, multi-writer-safe cache of probe answers (SQLite in WAL mode).

Every write is one transaction, so a killed process leaves either the whole answer or none.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from programs.types import Answer, InputError

DEFAULT_CACHE = Path(".selfx-cache") / "probe.sqlite"


def cache_key(*parts: str) -> str:
    """A stable key from its parts (backend, model, program fingerprint, mode, text)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class ProbeCache:
    def __init__(self, path: str | Path = DEFAULT_CACHE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"probe cache {self.path} cannot be used ({exc}): it only holds answers that can be "
                             "asked again, so delete it or pass --cache with another file") from exc

    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        keys = list(keys)
        found: dict[str, Answer] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                for key, blob in rows:
                    found[key] = Answer(**json.loads(blob))
        return found

    def put_many(self, items: dict[str, Answer]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)",
                                 [(k, json.dumps(asdict(a), ensure_ascii=False)) for k, a in items.items()])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
