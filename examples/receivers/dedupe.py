"""Remembering which callbacks were handled, by `webhook-id` (the same on every retry and replay).

A SQLite file here, so the examples run anywhere; in production use what the platform offers
with an atomic "insert if absent" (DynamoDB conditional put, Redis SET NX, a UNIQUE column).
"""

from __future__ import annotations

import sqlite3
import time


class Seen:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (webhook_id TEXT PRIMARY KEY, at REAL NOT NULL)")

    def claim(self, webhook_id: str) -> bool:
        """True the first time an id is claimed: this caller handles it; False for a duplicate."""
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (webhook_id, time.time()))
        return cursor.rowcount == 1

    def release(self, webhook_id: str) -> None:
        """Handling failed: forget the id, so segflow's retry is handled."""
        self._db.execute("DELETE FROM seen WHERE webhook_id = ?", (webhook_id,))
