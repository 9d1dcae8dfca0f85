"""What the applications' web services share: API keys from a header or the page's login cookie, the login
endpoint, the page at `/`, and 422 answers that name the field. The monitor's and the bot's apps call these."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from transferkit.serve.auth import KeyStore


class LoginRequest(BaseModel):
    key: str


def key_dependency(keys: KeyStore, enabled: bool, cookie: str,
                   scopes: tuple[str, ...] = ()) -> Callable[[Request], None]:
    """A FastAPI dependency: a known key (Authorization: Bearer, X-API-Key or the cookie) with one of `scopes`
    (any scope when empty); 401 / 403 otherwise; nothing when `enabled` is false."""
    def check(request: Request) -> None:
        if not enabled:
            return
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        p = keys.check(key or request.cookies.get(cookie))
        if p is None:
            raise HTTPException(401, "missing or unknown API key: send `Authorization: Bearer <key>` or "
                                     "`X-API-Key: <key>`", headers={"WWW-Authenticate": "Bearer"})
        if scopes and not (set(scopes) & p.scopes):
            raise HTTPException(403, f"the key '{p.name}' has none of the scopes {', '.join(scopes)}")
    return check


def add_page_and_login(app: FastAPI, page: str, keys: KeyStore, enabled: bool, cookie: str) -> None:
    """GET / (the page), POST /api/login (the key into an HttpOnly cookie), and field-naming 422 answers."""
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                    for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.post("/api/login")
    async def login(req: LoginRequest):
        if enabled and keys.check(req.key) is None:
            raise HTTPException(401, "unknown API key")
        r = JSONResponse({"ok": True})
        r.set_cookie(cookie, req.key, httponly=True, samesite="strict")
        return r
