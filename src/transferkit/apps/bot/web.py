"""`transferkit bot serve`: the chat page and the chat endpoint in one FastAPI process.

    GET  /           the chat page (self-contained HTML + inline JS)
    POST /api/login  {"key": ...} -> an HttpOnly cookie for the page
    POST /v1/chat    {"session": "...", "message": "..."} -> {"reply", "intent", "score", "handed_off", "candidates", ...}
    GET  /healthz /readyz

Chatting needs a `predict` (or `admin`) key, in `Authorization: Bearer`, `X-API-Key` or the login cookie.
401 no or unknown key, 403 wrong scope, 413 message longer than web.max_chars, 422 empty or malformed.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from transferkit.apps.bot.bot import Bot
from transferkit.apps.web import add_page_and_login, key_dependency
from transferkit.errors import TransferkitError
from transferkit.serve.auth import KeyStore

log = logging.getLogger("transferkit.bot")
COOKIE = "transferkit_bot_key"


class ChatRequest(BaseModel):
    session: str
    message: str


def create_bot_app(bot: Bot, keys: KeyStore | None = None) -> FastAPI:
    web = bot.cfg.web
    keys = keys if keys is not None else KeyStore.load(web.api_keys)
    if web.auth and not len(keys):
        raise TransferkitError("bot serve: no API keys. Give web.api_keys (or set TRANSFERKIT_API_KEYS), or "
                               "web.auth: false on a trusted network only. `transferkit keys new --scope predict` "
                               "makes a key.")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-bot")
    page = (resources.files("transferkit.apps.bot") / "chat.html").read_text(encoding="utf-8")
    page = page.replace("__MAX_CHARS__", str(web.max_chars)).replace("__LANG__", bot.cfg.language)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=True)

    app = FastAPI(title="transferkit bot", lifespan=lifespan)
    app.state.bot = bot

    chatter = key_dependency(keys, web.auth, COOKIE, ("predict", "admin"))
    add_page_and_login(app, page, keys, web.auth, COOKIE)

    @app.post("/v1/chat")
    async def chat(req: ChatRequest, _: Any = Depends(chatter)):
        if len(req.message) > web.max_chars:
            raise HTTPException(413, f"message: {len(req.message)} characters; the limit is {web.max_chars}")
        if not req.message.strip():
            raise HTTPException(422, "message: empty; write a question")
        if not req.session.strip() or len(req.session) > web.max_session_chars:
            raise HTTPException(422, f"session: give an id of 1 to {web.max_session_chars} characters")
        return await asyncio.get_running_loop().run_in_executor(pool, bot.reply, req.session, req.message)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "questions": len(bot.index.entries)}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


def serve(bot: Bot, host: str, port: int) -> None:
    import uvicorn

    app = create_bot_app(bot)
    log.info("chat page on http://%s:%s/", host, port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
