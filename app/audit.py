"""The audit log: who asked what in which collection, who ingested or deleted what, who changed access.

Rows are only ever added; admins read them through `GET /v1/audit` or `consulta users audit`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from app.db import Database, now

logger = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, action: str, *, user_id: int | None = None, username: str | None = None,
               collection: str | None = None, target: str | None = None, **detail: Any) -> None:
        """Add one row; a failure is logged, never raised, so auditing cannot break the request it records."""
        try:
            with self.db.write() as conn:
                conn.execute("INSERT INTO audit(at, user_id, username, action, collection, target, detail) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (now(), user_id, username, action, collection, target,
                              json.dumps(detail, ensure_ascii=False) if detail else None))
        except Exception:  # noqa: BLE001
            logger.exception("could not write the audit row for %s by %s", action, username)

    def query(self, *, username: str | None = None, action: str | None = None, collection: str | None = None,
              since: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first, filtered by any of user name, action (prefix, e.g. 'user.'), collection and time."""
        where, args = [], []
        if username:
            where.append("username = ?")
            args.append(username)
        if action:
            where.append("action LIKE ?")
            args.append(action.replace("%", "") + "%")
        if collection:
            where.append("collection = ?")
            args.append(collection)
        if since:
            where.append("at >= ?")
            args.append(since)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, (*args, limit, offset)).fetchall()
        return [{"id": r["id"], "at": r["at"], "user": r["username"], "action": r["action"],
                 "collection": r["collection"], "target": r["target"],
                 "detail": json.loads(r["detail"]) if r["detail"] else {}} for r in rows]
