"""Users, roles, groups, per-collection grants and API keys; who may read or write which collection.

Roles: admin (everything: users, grants, every collection), editor (ingest and delete in the collections
they may write; read those too), reader (ask and search in the collections they may read). Grants give
`read` or `write` on one collection (or `*`, every collection) to a user or a group.

Passwords are hashed with Argon2id (argon2-cffi). API keys and login sessions are random 256-bit
tokens stored only as their SHA-256 (a fast hash is enough for a secret that long); the plaintext is
shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.db import Database, now
from app.errors import AuthenticationError, ConflictError, ConsultaError, NotFoundError, PermissionDeniedError
from retrieval.types import SearchFilter

if TYPE_CHECKING:
    from app.audit import AuditLog

Role = Literal["admin", "editor", "reader"]
Permission = Literal["read", "write"]
ROLES: tuple[str, ...] = ("admin", "editor", "reader")
ALL = "*"  # a grant on every collection
API_KEY_PREFIX = "csk_"
SESSION_PREFIX = "cst_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_collection_name(name: str) -> str:
    """A collection name is also a folder name under uploads/: letters, digits, '_', '.', '-' only."""
    if not _COLLECTION.match(name or "") or ".." in name:
        raise ConsultaError(f"invalid collection name {name!r}: use letters, digits, '_', '.' and '-' "
                            "(at most 64, starting with a letter or digit)")
    return name


def _key_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may touch. `readable`/`writable` None means every collection."""

    user_id: int
    username: str
    role: Role
    readable: frozenset[str] | None
    writable: frozenset[str] | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_read(self, collection: str) -> bool:
        return self.readable is None or collection in self.readable

    def can_write(self, collection: str) -> bool:
        return self.writable is None or collection in self.writable

    def visible(self, collections: list[str]) -> list[str]:
        return [c for c in collections if self.can_read(c)]

    def search_filter(self, collection: str | None = None) -> SearchFilter | None:
        """The filter that retrieval applies inside the index: only what this caller may read."""
        if collection is not None:
            return SearchFilter(collections=(collection,))
        if self.readable is None:
            return None
        return SearchFilter(collections=tuple(sorted(self.readable)))

    def require_write(self, collection: str) -> None:
        if self.role == "reader":
            raise PermissionDeniedError("readers cannot add or remove documents; ask an admin for the editor role")
        if not self.can_write(collection):
            raise PermissionDeniedError(f"you may not change the collection '{collection}'; ask an admin "
                                        "for a write grant")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDeniedError("only admins may do this")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: str
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "disabled": self.disabled,
                "created_at": self.created_at, "groups": list(self.groups)}


class AccessControl:
    """Users, groups, grants and keys in the app database."""

    def __init__(self, db: Database, *, session_hours: float = 12.0) -> None:
        self.db = db
        self.session_hours = session_hours
        self._hasher = PasswordHasher()

    # ---- users -----------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def create_user(self, username: str, role: Role, password: str | None = None) -> User:
        if not _NAME.match(username or ""):
            raise ConsultaError(f"invalid user name {username!r}: letters, digits, '_', '.', '@' and '-', "
                                "at most 64")
        if role not in ROLES:
            raise ConsultaError(f"unknown role {role!r}: choose admin, editor or reader")
        if password is not None:
            _check_password(password)
        hashed = self._hasher.hash(password) if password else None
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise ConflictError(f"a user named '{username}' already exists")
            cur = conn.execute("INSERT INTO users(username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                               (username, hashed, role, now()))
            user_id = cast(int, cur.lastrowid)  # set by the INSERT
        return self.user(user_id)

    def user(self, ref: int | str) -> User:
        with self.db.read() as conn:
            col = "id" if isinstance(ref, int) else "username"
            row = conn.execute(f"SELECT * FROM users WHERE {col} = ?", (ref,)).fetchone()  # noqa: S608
            if row is None:
                raise NotFoundError(f"no user {ref!r}")
            groups = tuple(r["name"] for r in conn.execute(
                "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ? "
                "ORDER BY g.name", (row["id"],)))
        return User(row["id"], row["username"], row["role"], bool(row["disabled"]), row["created_at"], groups)

    def users(self) -> list[User]:
        with self.db.read() as conn:
            ids = [r["id"] for r in conn.execute("SELECT id FROM users ORDER BY username")]
        return [self.user(i) for i in ids]

    def update_user(self, ref: int | str, *, role: Role | None = None, password: str | None = None,
                    disabled: bool | None = None) -> User:
        user = self.user(ref)
        with self.db.write() as conn:
            if role is not None:
                if role not in ROLES:
                    raise ConsultaError(f"unknown role {role!r}: choose admin, editor or reader")
                conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user.id))
            if password is not None:
                _check_password(password)
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                             (self._hasher.hash(password), user.id))
                conn.execute("DELETE FROM api_keys WHERE user_id = ? AND kind = 'session'", (user.id,))
            if disabled is not None:
                conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user.id))
                if disabled:
                    conn.execute("DELETE FROM api_keys WHERE user_id = ? AND kind = 'session'", (user.id,))
            self._keep_an_admin(conn)
        return self.user(user.id)

    def delete_user(self, ref: int | str) -> None:
        user = self.user(ref)
        with self.db.write() as conn:
            conn.execute("DELETE FROM grants WHERE subject_kind = 'user' AND subject_id = ?", (user.id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
            self._keep_an_admin(conn)

    @staticmethod
    def _keep_an_admin(conn) -> None:
        if conn.execute("SELECT 1 FROM users WHERE role = 'admin' AND disabled = 0").fetchone() is None:
            raise ConflictError("that would leave no active admin; make another admin first")

    def login(self, username: str, password: str) -> tuple[str, User]:
        """A session token for the UI, valid for `session_hours`; AuthenticationError on a bad password."""
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        failed = AuthenticationError("wrong user name or password")
        if row is None or not row["password_hash"]:
            self._hasher.hash(password)  # as slow as a real check, so timing does not tell which names exist
            raise failed
        try:
            self._hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            raise failed from None
        if row["disabled"]:
            raise AuthenticationError("this account is disabled; ask an admin")
        if self._hasher.check_needs_rehash(row["password_hash"]):
            with self.db.write() as conn:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (self._hasher.hash(password),
                                                                                 row["id"]))
        expires = datetime.now(UTC) + timedelta(hours=self.session_hours)
        token = self._new_key(row["id"], "session", "login", expires)
        return token, self.user(row["id"])

    # ---- keys ------------------------------------------------------------------------------
    def create_api_key(self, ref: int | str, name: str = "api", *, days: float | None = None) -> str:
        """A new API key for a user; the plaintext is returned once and stored only hashed."""
        user = self.user(ref)
        if days is not None and not 0 < days <= 36500:
            raise ConsultaError(f"a key's lifetime must be between 0 and 36500 days (got {days})")
        expires = datetime.now(UTC) + timedelta(days=days) if days else None
        return self._new_key(user.id, "api", name, expires)

    def _new_key(self, user_id: int, kind: str, name: str, expires: datetime | None) -> str:
        token = (SESSION_PREFIX if kind == "session" else API_KEY_PREFIX) + secrets.token_urlsafe(32)
        with self.db.write() as conn:
            conn.execute("INSERT INTO api_keys(user_id, name, kind, prefix, key_hash, created_at, expires_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (user_id, name, kind, token[:10], _key_hash(token), now(),
                          expires.isoformat(timespec="seconds") if expires else None))
        return token

    def api_keys(self, ref: int | str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT k.id, k.name, k.prefix, k.created_at, k.expires_at, u.username FROM api_keys k "
               "JOIN users u ON u.id = k.user_id WHERE k.kind = 'api'")
        args: tuple = ()
        if ref is not None:
            sql += " AND u.id = ?"
            args = (self.user(ref).id,)
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY k.id", args)]

    def revoke_key(self, key_id: int) -> None:
        with self.db.write() as conn:
            if conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount == 0:
                raise NotFoundError(f"no API key with id {key_id}")

    def logout(self, token: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM api_keys WHERE key_hash = ? AND kind = 'session'", (_key_hash(token),))

    def authenticate(self, token: str | None) -> Principal:
        """The caller behind an API key or session token; AuthenticationError when there is none."""
        if not token:
            raise AuthenticationError("sign in first: send 'Authorization: Bearer <API key or session token>' "
                                      "(POST /v1/auth/login gives a token; `consulta users key` an API key)")
        with self.db.read() as conn:
            row = conn.execute("SELECT k.expires_at, u.id, u.disabled FROM api_keys k JOIN users u "
                               "ON u.id = k.user_id WHERE k.key_hash = ?", (_key_hash(token),)).fetchone()
        if row is None:
            raise AuthenticationError("unknown or revoked credential; sign in again")
        if row["expires_at"] and datetime.fromisoformat(row["expires_at"]) < datetime.now(UTC):
            raise AuthenticationError("your session has expired; sign in again")
        if row["disabled"]:
            raise AuthenticationError("this account is disabled; ask an admin")
        return self.principal(row["id"])

    def principal(self, ref: int | str) -> Principal:
        user = self.user(ref)
        if user.role == "admin":
            return Principal(user.id, user.username, "admin", None, None)
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT collection, permission FROM grants WHERE (subject_kind = 'user' AND subject_id = ?) "
                "OR (subject_kind = 'group' AND subject_id IN "
                "(SELECT group_id FROM group_members WHERE user_id = ?))", (user.id, user.id)).fetchall()
        read = {r["collection"] for r in rows}  # a write grant implies read
        write = {r["collection"] for r in rows if r["permission"] == "write"} if user.role == "editor" else set()
        return Principal(user.id, user.username, user.role,
                         None if ALL in read else frozenset(read), None if ALL in write else frozenset(write))

    # ---- groups and grants ------------------------------------------------------------------
    def create_group(self, name: str) -> None:
        if not _NAME.match(name or ""):
            raise ConsultaError(f"invalid group name {name!r}")
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"a group named '{name}' already exists")
            conn.execute("INSERT INTO groups(name) VALUES (?)", (name,))

    def _group_id(self, conn, name: str) -> int:
        row = conn.execute("SELECT id FROM groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no group named '{name}'")
        return row["id"]

    def add_member(self, group: str, user: int | str) -> None:
        uid = self.user(user).id
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO group_members(group_id, user_id) VALUES (?, ?)",
                         (self._group_id(conn, group), uid))

    def remove_member(self, group: str, user: int | str) -> None:
        uid = self.user(user).id
        with self.db.write() as conn:
            conn.execute("DELETE FROM group_members WHERE group_id = ? AND user_id = ?",
                         (self._group_id(conn, group), uid))

    def groups(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT g.name, u.username FROM groups g LEFT JOIN group_members m "
                                "ON m.group_id = g.id LEFT JOIN users u ON u.id = m.user_id "
                                "ORDER BY g.name, u.username").fetchall()
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["name"], [])
            if r["username"]:
                out[r["name"]].append(r["username"])
        return [{"name": k, "members": v} for k, v in out.items()]

    def _subject(self, conn, *, user: str | None, group: str | None) -> tuple[str, int]:
        if (user is None) == (group is None):
            raise ConsultaError("a grant goes to exactly one user or one group")
        if user is not None:
            return "user", self.user(user).id
        return "group", self._group_id(conn, cast(str, group))  # exactly one of the two is given

    def grant(self, collection: str, permission: Permission, *, user: str | None = None,
              group: str | None = None) -> None:
        if collection != ALL:
            check_collection_name(collection)
        if permission not in ("read", "write"):
            raise ConsultaError(f"unknown permission {permission!r}: read or write")
        with self.db.write() as conn:
            kind, sid = self._subject(conn, user=user, group=group)
            conn.execute("INSERT OR IGNORE INTO grants(subject_kind, subject_id, collection, permission) "
                         "VALUES (?, ?, ?, ?)", (kind, sid, collection, permission))

    def revoke(self, collection: str, permission: Permission, *, user: str | None = None,
               group: str | None = None) -> None:
        with self.db.write() as conn:
            kind, sid = self._subject(conn, user=user, group=group)
            gone = conn.execute("DELETE FROM grants WHERE subject_kind = ? AND subject_id = ? AND collection = ? "
                                "AND permission = ?", (kind, sid, collection, permission)).rowcount
        if not gone:
            raise NotFoundError("no such grant")

    def grants(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT g.collection, g.permission, g.subject_kind, "
                "CASE g.subject_kind WHEN 'user' THEN (SELECT username FROM users WHERE id = g.subject_id) "
                "ELSE (SELECT name FROM groups WHERE id = g.subject_id) END AS subject "
                "FROM grants g ORDER BY g.collection, g.subject_kind, subject, g.permission").fetchall()
        return [{"collection": r["collection"], "permission": r["permission"],
                 r["subject_kind"]: r["subject"]} for r in rows]


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise ConsultaError("passwords need at least 8 characters")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def ensure_first_admin(access: AccessControl, audit: AuditLog, username: str = "admin") -> tuple[str, str] | None:
    """On a fresh install (no users yet), create an admin with a random password; returns (name, password)
    the one time it does, None otherwise."""
    if access.has_users():
        return None
    password = generate_password()
    try:
        access.create_user(username, "admin", password)
    except ConflictError:  # another process made it first
        return None
    audit.record("user.create", username="(first run)", target=username, role="admin")
    return username, password


class LinkSigner:
    """Signed, expiring links to a document's file, so that a browser can open it in one click (no header).

    The link names the user it was made for; opening it checks that this user may still read it.
    """

    def __init__(self, db: Database, *, hours: float = 12.0) -> None:
        self.db = db
        self.hours = hours

    def _secret(self) -> bytes:
        return self.db.meta("link_secret", lambda: secrets.token_hex(32)).encode()

    def _mac(self, document_id: str, user_id: int, expires: int) -> str:
        import hmac

        msg = f"{document_id}:{user_id}:{expires}".encode()
        return hmac.new(self._secret(), msg, hashlib.sha256).hexdigest()[:32]

    def query(self, document_id: str, user_id: int) -> str:
        expires = int((datetime.now(UTC) + timedelta(hours=self.hours)).timestamp())
        return f"u={user_id}&exp={expires}&sig={self._mac(document_id, user_id, expires)}"

    def verify(self, document_id: str, user_id: int, expires: int, sig: str) -> None:
        import hmac

        # bytes, not str: compare_digest refuses non-ASCII str, and a link's signature is whatever the caller sent
        if not hmac.compare_digest(self._mac(document_id, user_id, expires).encode(), (sig or "").encode()):
            raise AuthenticationError("this link is not valid; open the document from the answer again")
        if expires < datetime.now(UTC).timestamp():
            raise AuthenticationError("this link has expired; open the document from the answer again")
