"""`transferkit monitor serve`: the dashboard, its data, and the ingest endpoint, in one FastAPI process with the
monitor; a background thread watches the folder (ingest.watch) and, on the wall clock, closes windows.

    GET  /                 the dashboard (live: it polls the two endpoints below)
    GET  /api/summary      windows with counts, label shares and confidence per model; totals
    GET  /api/alerts       alerts, newest first, with their evidence texts and webhook deliveries
    POST /api/login        {"key": ...} -> an HttpOnly cookie for the dashboard
    POST /v1/ingest        {"texts": ["...", {"text": ..., "date": ..., "id": ...}]} (an `ingest` or `admin` key)
    GET  /healthz /readyz

Reading needs a key of any scope (header or the login cookie); posting texts an `ingest` or `admin` key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Union

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from transferkit.apps.monitor import ingest as I
from transferkit.apps.monitor.engine import Monitor
from transferkit.apps.web import add_page_and_login, key_dependency
from transferkit.errors import DataError, TransferkitError
from transferkit.serve.auth import KeyStore

log = logging.getLogger("transferkit.monitor")
COOKIE = "transferkit_monitor_key"


class IngestRequest(BaseModel):
    texts: list[Union[str, dict[str, Any]]] = Field(..., min_length=1, description="Texts, or records with the "
                                                    "text, time and id columns of the monitor's ingest section.")


class Watcher:
    """Ingests each new file of a folder once (when its size has stopped changing), and on the wall clock
    closes the windows whose time has passed. One thread; stops when told."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.folder = Path(monitor.cfg.ingest.watch) if monitor.cfg.ingest.watch else None
        self.poll = monitor.cfg.ingest.poll_s
        self._stop = threading.Event()
        self._sizes: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, name="transferkit-monitor-watch", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a bad file or a database hiccup must not stop the watcher
                log.error("watcher: %s", e)
            self._stop.wait(self.poll)

    def tick(self) -> None:
        if self.folder is not None:
            for p in sorted(self.folder.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
                if not p.is_file() or not I.kind_of(p):
                    continue
                st = p.stat()
                key = str(p.resolve())
                if self.monitor.store.file_done(key, st.st_size, st.st_mtime):
                    continue
                if self._sizes.get(key) != st.st_size:  # still being written? wait for one more look
                    self._sizes[key] = st.st_size
                    continue
                try:
                    res = self.monitor.ingest(I.read(p, self.monitor.cfg.ingest))
                    rows = res.stored + res.duplicates
                    log.info("ingested %s: %s new texts, %s already stored, %s alerts", p.name, res.stored,
                             res.duplicates, len(res.alerts))
                except DataError as e:
                    self.errors.append(str(e))
                    log.error("not ingested (fix the file and write it again): %s", e)
                    rows = -1
                self.monitor.store.mark_file(key, st.st_size, st.st_mtime, rows)
        if self.monitor.cfg.clock == "wall":
            from transferkit.apps.monitor.store import now

            self.monitor.advance(now())


def create_monitor_app(monitor: Monitor, keys: KeyStore | None = None, watch: bool = True) -> FastAPI:
    web = monitor.cfg.web
    keys = keys if keys is not None else KeyStore.load(web.api_keys)
    if web.auth and not len(keys):
        raise TransferkitError("monitor serve: no API keys. Give web.api_keys (or set TRANSFERKIT_API_KEYS), or "
                               "web.auth: false on a trusted network only. `transferkit keys new --scope ingest` "
                               "makes a key.")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-monitor")
    watcher = Watcher(monitor) if watch and (monitor.cfg.ingest.watch or monitor.cfg.clock == "wall") else None
    page = (resources.files("transferkit.apps.monitor") / "dashboard.html").read_text(encoding="utf-8")
    page = page.replace("__REFRESH_MS__", str(int(web.refresh_s * 1000)))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watcher is not None:
            watcher.start()
        yield
        if watcher is not None:
            watcher.stop()
        pool.shutdown(wait=True)

    app = FastAPI(title="transferkit monitor", lifespan=lifespan)
    app.state.monitor, app.state.watcher = monitor, watcher

    reader = key_dependency(keys, web.auth, COOKIE)
    writer = key_dependency(keys, web.auth, COOKIE, ("ingest", "admin"))
    add_page_and_login(app, page, keys, web.auth, COOKIE)

    @app.get("/api/summary")
    async def summary(_: Any = Depends(reader)):
        s = await asyncio.get_running_loop().run_in_executor(None, monitor.summary)
        return {"name": monitor.cfg.name, **s}

    @app.get("/api/alerts")
    async def alerts(limit: int = 100, _: Any = Depends(reader)):
        rows = await asyncio.get_running_loop().run_in_executor(None, lambda: monitor.store.alerts(limit=limit))
        return {"alerts": rows}

    @app.post("/v1/ingest")
    async def ingest(req: IngestRequest, _: Any = Depends(writer)):
        if len(req.texts) > web.max_texts:
            raise HTTPException(413, f"{len(req.texts)} texts in one request; the limit is {web.max_texts}: split it")
        try:
            items = [I.make(r, monitor.cfg.ingest, f"texts[{i}]", "http") for i, r in enumerate(req.texts)]
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        res = await asyncio.get_running_loop().run_in_executor(pool, monitor.ingest, items)
        return {"stored": res.stored, "duplicates": res.duplicates, "took_ms": round(1000 * res.seconds, 1),
                "alerts": [{k: a[k] for k in ("id", "rule", "label", "window_start", "message")} for a in res.alerts]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "texts": monitor.store.counts()["texts"]}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


def serve(monitor: Monitor, host: str, port: int) -> None:
    import uvicorn

    app = create_monitor_app(monitor)
    log.info("dashboard on http://%s:%s/", host, port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
