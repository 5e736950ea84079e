"""FastAPI dependencies, declared once as `Annotated` aliases: the services, and the caller (Principal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.auth import Principal
from app.container import Services

_bearer = HTTPBearer(auto_error=False, description="An API key (`consulta users key NAME`) or a session token "
                     "from POST /v1/auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key, as an alternative header")


def get_services(request: Request) -> Services:
    """The Services the app was created with."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                 api_key: Annotated[str | None, Depends(_api_key)]) -> str | None:
    return bearer.credentials if bearer is not None else api_key


TokenDep = Annotated[str | None, Depends(bearer_token)]


def get_principal(s: ServicesDep, token: TokenDep) -> Principal:
    """The authenticated caller; 401 without a valid API key or session token."""
    return s.access.authenticate(token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_admin(principal: PrincipalDep) -> Principal:
    principal.require_admin()
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
