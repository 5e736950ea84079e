"""`consulta users ...`: accounts, API keys, groups, grants and the audit log, from the command line.

Secrets (a generated password, an API key) are printed once, on stdout; they are stored only hashed.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from app.cli.common import JsonOpt, build_services, err

users_cli = typer.Typer(help="Users, roles, API keys, groups, grants and the audit log.", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="User name")]


def _out(obj: Any, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(text + "\n")


@users_cli.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="The admin's user name")] = "admin",
    password: Annotated[str | None, typer.Option(help="Password (default: a random one, printed once)",
                                                 envvar="CONSULTA_ADMIN_PASSWORD")] = None,
    if_none: Annotated[bool, typer.Option("--if-none", help="Do nothing when a user exists already")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an admin (the first one on a fresh install); prints its password and an API key once."""
    from app.auth import generate_password

    s = build_services()
    if if_none and s.access.has_users():
        err.print("users exist already; nothing done")
        return
    secret = password or generate_password()
    user = s.access.create_user(username, "admin", secret)
    key = s.access.create_api_key(user.id, "cli")
    s.audit.record("user.create", username="(cli)", target=username, role="admin")
    _out({"username": username, "password": None if password else secret, "api_key": key}, as_json,
         f"admin '{username}' created.\n  password: {'(as given)' if password else secret}\n  API key:  {key}\n"
         "These are shown only once; store them now.")


@users_cli.command("create")
def create(
    username: UserArg,
    role: Annotated[str, typer.Option(help="admin, editor or reader")] = "reader",
    password: Annotated[str | None, typer.Option(help="Password (default: a random one, printed once)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user."""
    from app.auth import generate_password

    s = build_services()
    secret = password or generate_password()
    user = s.access.create_user(username, role, secret)  # type: ignore[arg-type]
    s.audit.record("user.create", username="(cli)", target=username, role=role)
    _out({**user.to_dict(), "password": None if password else secret}, as_json,
         f"{role} '{username}' created" + ("" if password else f"; password (shown once): {secret}"))


@users_cli.command("list")
def list_users(as_json: JsonOpt = False) -> None:
    """List users with their roles and groups."""
    users = [u.to_dict() for u in build_services().access.users()]
    _out({"users": users}, as_json, "\n".join(
        f"{u['username']:<24} {u['role']:<7} {'disabled' if u['disabled'] else 'active  '} "
        f"{','.join(u['groups'])}" for u in users) or "no users")


@users_cli.command("set")
def set_user(
    username: UserArg,
    role: Annotated[str | None, typer.Option(help="New role: admin, editor or reader")] = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable", help="Disable or enable the account")] = None,
) -> None:
    """Change a user's role, or disable/enable them."""
    s = build_services()
    user = s.access.update_user(username, role=role, disabled=disable)  # type: ignore[arg-type]
    s.audit.record("user.update", username="(cli)", target=username, role=role, disabled=disable)
    err.print(f"{user.username}: {user.role}{' (disabled)' if user.disabled else ''}")


@users_cli.command("reset-password")
def reset_password(
    username: UserArg,
    password: Annotated[str | None, typer.Option(help="New password (default: random, printed once)")] = None,
) -> None:
    """Set a new password (ends the user's UI sessions)."""
    from app.auth import generate_password

    s = build_services()
    secret = password or generate_password()
    s.access.update_user(username, password=secret)
    s.audit.record("user.update", username="(cli)", target=username, password="changed")
    _out({}, False, f"new password for '{username}' (shown once): {secret}" if not password else "password changed")


@users_cli.command("delete")
def delete(username: UserArg) -> None:
    """Delete a user, their keys, conversations and grants."""
    s = build_services()
    s.access.delete_user(username)
    s.audit.record("user.delete", username="(cli)", target=username)
    err.print(f"deleted {username}")


@users_cli.command("key")
def key(
    username: UserArg,
    name: Annotated[str, typer.Option(help="What the key is for")] = "api",
    days: Annotated[float | None, typer.Option(help="Expires after this many days")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an API key for a user; printed once, stored hashed."""
    s = build_services()
    secret = s.access.create_api_key(username, name, days=days)
    s.audit.record("key.create", username="(cli)", target=username, name=name)
    _out({"username": username, "api_key": secret}, as_json, secret)


@users_cli.command("keys")
def keys(as_json: JsonOpt = False) -> None:
    """List API keys (their first characters only)."""
    rows = build_services().access.api_keys()
    _out({"keys": rows}, as_json, "\n".join(f"{k['id']:>4} {k['prefix']}… {k['username']:<20} {k['name']} "
                                            f"{k['expires_at'] or ''}" for k in rows) or "no API keys")


@users_cli.command("revoke-key")
def revoke_key(key_id: Annotated[int, typer.Argument(help="The key's id (consulta users keys)")]) -> None:
    """Revoke an API key."""
    s = build_services()
    s.access.revoke_key(key_id)
    s.audit.record("key.revoke", username="(cli)", target=str(key_id))
    err.print(f"revoked key {key_id}")


@users_cli.command("group")
def group(
    name: Annotated[str, typer.Argument(help="Group name")],
    add: Annotated[list[str] | None, typer.Option("--add", help="Add this user (repeatable)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Remove this user (repeatable)")] = None,
) -> None:
    """Create a group (if new) and add or remove members."""
    from app.errors import ConflictError

    s = build_services()
    try:
        s.access.create_group(name)
        s.audit.record("group.create", username="(cli)", target=name)
    except ConflictError:
        pass
    for u in add or []:
        s.access.add_member(name, u)
        s.audit.record("group.add_member", username="(cli)", target=name, member=u)
    for u in remove or []:
        s.access.remove_member(name, u)
        s.audit.record("group.remove_member", username="(cli)", target=name, member=u)
    members = next(g["members"] for g in s.access.groups() if g["name"].lower() == name.lower())
    err.print(f"group {name}: {', '.join(members) or '(no members)'}")


def _grant(collection: str, permission: str, user: str | None, group: str | None, revoke: bool) -> None:
    s = build_services()
    if revoke:
        s.access.revoke(collection, permission, user=user, group=group)  # type: ignore[arg-type]
    else:
        s.access.grant(collection, permission, user=user, group=group)  # type: ignore[arg-type]
    s.audit.record("grant.remove" if revoke else "grant.add", username="(cli)", collection=collection,
                   target=user or f"group:{group}", permission=permission)
    err.print(f"{'revoked' if revoke else 'granted'} {permission} on {collection} "
              f"{'from' if revoke else 'to'} {user or 'group ' + str(group)}")


CollectionArg = Annotated[str, typer.Argument(help="Collection name, or '*' for every collection")]
PermOpt = Annotated[str, typer.Option(help="read or write")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Grant to this user")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Grant to this group")]


@users_cli.command("grant")
def grant(collection: CollectionArg, permission: PermOpt = "read", user: UserOpt = None,
          group: GroupOpt = None) -> None:
    """Give a user or a group read or write on a collection."""
    _grant(collection, permission, user, group, revoke=False)


@users_cli.command("revoke")
def revoke(collection: CollectionArg, permission: PermOpt = "read", user: UserOpt = None,
           group: GroupOpt = None) -> None:
    """Take back a grant."""
    _grant(collection, permission, user, group, revoke=True)


@users_cli.command("grants")
def grants(as_json: JsonOpt = False) -> None:
    """List grants."""
    rows = build_services().access.grants()
    _out({"grants": rows}, as_json, "\n".join(
        f"{g['collection']:<20} {g['permission']:<6} {g.get('user') or 'group:' + str(g.get('group'))}"
        for g in rows) or "no grants")


@users_cli.command("audit")
def audit(
    user: Annotated[str | None, typer.Option(help="Only this user")] = None,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this (ask, document., user.)")] = None,
    collection: Annotated[str | None, typer.Option(help="Only this collection")] = None,
    limit: Annotated[int, typer.Option(help="Newest N rows")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Read the audit log, newest first."""
    rows = build_services().audit.query(username=user, action=action, collection=collection, limit=limit)
    _out({"entries": rows}, as_json, "\n".join(
        f"{r['at']} {r['user'] or '-':<16} {r['action']:<18} {r['collection'] or '-':<14} {r['target'] or ''} "
        f"{json.dumps(r['detail'], ensure_ascii=False) if r['detail'] else ''}" for r in rows) or "no entries")
