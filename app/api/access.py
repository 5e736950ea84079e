"""Login, the caller's own account, and the admin endpoints: users, keys, groups, grants, audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import AdminDep, PrincipalDep, ServicesDep, TokenDep
from app.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuditResponse,
    ErrorResponse,
    GrantIn,
    GroupIn,
    LoginRequest,
    LoginResponse,
    MeResponse,
    UserCreate,
    UserCreated,
    UserPublic,
    UsersResponse,
    UserUpdate,
)
from app.auth import generate_password
from app.errors import AuthenticationError

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No valid API key or session token"},
    403: {"model": ErrorResponse, "description": "Signed in, but not allowed (role or grants)"},
}

router = APIRouter(prefix="/v1")


def _user(u) -> UserPublic:
    return UserPublic(**u.to_dict())


@router.post("/auth/login", response_model=LoginResponse, tags=["auth"],
             responses={401: {"model": ErrorResponse, "description": "Wrong user name or password"}})
def login(body: LoginRequest, s: ServicesDep, request: Request) -> LoginResponse:
    """User name and password -> a session token (for the UI); send it as `Authorization: Bearer <token>`."""
    try:
        token, user = s.access.login(body.username, body.password)
    except AuthenticationError:
        s.audit.record("login.failed", username=body.username,
                       address=request.client.host if request.client else None)
        raise
    s.audit.record("login", user_id=user.id, username=user.username)
    return LoginResponse(token=token, expires_in=int(s.settings.api.session_hours * 3600), user=_user(user))


@router.post("/auth/logout", tags=["auth"], responses=AUTH_ERRORS)
def logout(s: ServicesDep, principal: PrincipalDep, token: TokenDep) -> dict[str, bool]:
    """End this session token (API keys are revoked with DELETE /v1/keys/{id})."""
    s.access.logout(token or "")
    return {"ok": True}


@router.get("/auth/me", response_model=MeResponse, tags=["auth"], responses=AUTH_ERRORS)
def me(s: ServicesDep, principal: PrincipalDep) -> MeResponse:
    """Who the credential belongs to, and which collections they may read and change."""
    return MeResponse(user=_user(s.access.user(principal.user_id)),
                      readable=None if principal.readable is None else sorted(principal.readable),
                      writable=None if principal.writable is None else sorted(principal.writable))


@router.get("/users", response_model=UsersResponse, tags=["admin"], responses=AUTH_ERRORS)
def list_users(s: ServicesDep, admin: AdminDep) -> UsersResponse:
    return UsersResponse(users=[_user(u) for u in s.access.users()])


@router.post("/users", response_model=UserCreated, status_code=201, tags=["admin"], responses={
    **AUTH_ERRORS, 409: {"model": ErrorResponse, "description": "The user name is taken"}})
def create_user(body: UserCreate, s: ServicesDep, admin: AdminDep) -> UserCreated:
    """Create a user; without a password, a random one is made and returned once."""
    password = body.password or generate_password()
    user = s.access.create_user(body.username, body.role, password)  # type: ignore[arg-type]
    s.audit.record("user.create", user_id=admin.user_id, username=admin.username, target=user.username,
                   role=user.role)
    return UserCreated(user=_user(user), password=None if body.password else password)


@router.patch("/users/{username}", response_model=UserPublic, tags=["admin"], responses=AUTH_ERRORS)
def update_user(username: str, body: UserUpdate, s: ServicesDep, admin: AdminDep) -> UserPublic:
    """Change a user's role, password or disabled flag (a new password or disabling ends their sessions)."""
    user = s.access.update_user(username, role=body.role, password=body.password,  # type: ignore[arg-type]
                                disabled=body.disabled)
    s.audit.record("user.update", user_id=admin.user_id, username=admin.username, target=username,
                   **{k: v for k, v in body.model_dump(exclude_none=True).items() if k != "password"},
                   **({"password": "changed"} if body.password else {}))
    return _user(user)


@router.delete("/users/{username}", tags=["admin"], responses=AUTH_ERRORS)
def delete_user(username: str, s: ServicesDep, admin: AdminDep) -> dict[str, str]:
    s.access.delete_user(username)
    s.audit.record("user.delete", user_id=admin.user_id, username=admin.username, target=username)
    return {"deleted": username}


@router.post("/users/{username}/keys", response_model=ApiKeyCreated, status_code=201, tags=["admin"],
             responses=AUTH_ERRORS)
def create_key(username: str, body: ApiKeyCreate, s: ServicesDep, principal: PrincipalDep) -> ApiKeyCreated:
    """A new API key for a user (admins: anyone; others: themselves); shown once, stored hashed."""
    if username.lower() != principal.username.lower():
        principal.require_admin()
    key = s.access.create_api_key(username, body.name, days=body.days)
    s.audit.record("key.create", user_id=principal.user_id, username=principal.username, target=username,
                   name=body.name)
    return ApiKeyCreated(key=key, username=s.access.user(username).username)


@router.get("/keys", response_model=list[ApiKeyOut], tags=["admin"], responses=AUTH_ERRORS)
def list_keys(s: ServicesDep, admin: AdminDep) -> list[ApiKeyOut]:
    return [ApiKeyOut(**k) for k in s.access.api_keys()]


@router.delete("/keys/{key_id}", tags=["admin"], responses=AUTH_ERRORS)
def revoke_key(key_id: int, s: ServicesDep, admin: AdminDep) -> dict[str, int]:
    s.access.revoke_key(key_id)
    s.audit.record("key.revoke", user_id=admin.user_id, username=admin.username, target=str(key_id))
    return {"revoked": key_id}


@router.get("/groups", tags=["admin"], responses=AUTH_ERRORS)
def list_groups(s: ServicesDep, admin: AdminDep) -> dict[str, list[dict[str, Any]]]:
    return {"groups": s.access.groups()}


@router.post("/groups", status_code=201, tags=["admin"], responses=AUTH_ERRORS)
def create_group(body: GroupIn, s: ServicesDep, admin: AdminDep) -> dict[str, str]:
    s.access.create_group(body.name)
    s.audit.record("group.create", user_id=admin.user_id, username=admin.username, target=body.name)
    return {"created": body.name}


@router.put("/groups/{group}/members/{username}", tags=["admin"], responses=AUTH_ERRORS)
def add_member(group: str, username: str, s: ServicesDep, admin: AdminDep) -> dict[str, str]:
    s.access.add_member(group, username)
    s.audit.record("group.add_member", user_id=admin.user_id, username=admin.username, target=group,
                   member=username)
    return {"group": group, "added": username}


@router.delete("/groups/{group}/members/{username}", tags=["admin"], responses=AUTH_ERRORS)
def remove_member(group: str, username: str, s: ServicesDep, admin: AdminDep) -> dict[str, str]:
    s.access.remove_member(group, username)
    s.audit.record("group.remove_member", user_id=admin.user_id, username=admin.username, target=group,
                   member=username)
    return {"group": group, "removed": username}


@router.get("/grants", tags=["admin"], responses=AUTH_ERRORS)
def list_grants(s: ServicesDep, admin: AdminDep) -> dict[str, list[dict[str, Any]]]:
    return {"grants": s.access.grants()}


@router.post("/grants", status_code=201, tags=["admin"], responses=AUTH_ERRORS)
def add_grant(body: GrantIn, s: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    """Give a user or a group read or write on a collection ('*': all of them)."""
    s.access.grant(body.collection, body.permission, user=body.user, group=body.group)  # type: ignore[arg-type]
    s.audit.record("grant.add", user_id=admin.user_id, username=admin.username, collection=body.collection,
                   target=body.user or f"group:{body.group}", permission=body.permission)
    return body.model_dump(exclude_none=True)


@router.delete("/grants", tags=["admin"], responses=AUTH_ERRORS)
def remove_grant(body: GrantIn, s: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    s.access.revoke(body.collection, body.permission, user=body.user, group=body.group)  # type: ignore[arg-type]
    s.audit.record("grant.remove", user_id=admin.user_id, username=admin.username, collection=body.collection,
                   target=body.user or f"group:{body.group}", permission=body.permission)
    return {"removed": body.model_dump(exclude_none=True)}


@router.get("/audit", response_model=AuditResponse, tags=["admin"], responses=AUTH_ERRORS)
def audit(s: ServicesDep, admin: AdminDep, user: str | None = None, action: str | None = None,
          collection: str | None = None, since: str | None = None, limit: int = 100,
          offset: int = 0) -> AuditResponse:
    """The audit log, newest first: who asked what where, who ingested or deleted what, who changed access.
    `action` matches as a prefix ('document.' gives ingests and deletions)."""
    entries = s.audit.query(username=user, action=action, collection=collection, since=since,
                            limit=max(1, min(limit, 1000)), offset=max(0, offset))
    return AuditResponse.model_validate({"entries": entries})
