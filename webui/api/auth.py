"""HTTP Basic auth for the API (`--api-auth user:pass[,user2:pass2]`).

Gradio's `auth=` guards only the Gradio routes, so the API checks credentials itself.
Every pair is compared in constant time, whatever matches, so the time taken says
nothing about which user exists or how much of a password was right.
"""
from __future__ import annotations

import secrets

from fastapi import Depends
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from webui.api.errors import ApiError

_basic = HTTPBasic(auto_error=False, description="--api-auth user:password")


def check(credentials: list[tuple[str, str]], user: str, password: str) -> bool:
    ok = False
    given_user, given_password = user.encode("utf-8"), password.encode("utf-8")
    for u, p in credentials:
        same_user = secrets.compare_digest(given_user, u.encode("utf-8"))
        same_password = secrets.compare_digest(given_password, p.encode("utf-8"))
        ok |= same_user & same_password
    return ok


def basic_auth(credentials: list[tuple[str, str]]):
    """A FastAPI dependency: 401 with `WWW-Authenticate: Basic` unless the request
    carries one of `credentials`."""
    pairs = list(credentials)

    def require(given: HTTPBasicCredentials | None = Depends(_basic)) -> str:
        if given is None or not check(pairs, given.username, given.password):
            raise ApiError(401, None, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return given.username

    return require
