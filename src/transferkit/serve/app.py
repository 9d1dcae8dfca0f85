"""The FastAPI application of `transferkit serve`.

    POST /v1/predict        {"inputs": [...], "pairs": [...]?}  -> {"predictions": [...], "model_version": ...}
    POST /v1/explain        {"inputs": [texts], "method": "ig"|"rollout", "target"?, "steps"?} -> word attributions
    GET  /v1/model          task, labels, version, backend, test metrics
    POST /v1/admin/reload   {"path": ...}? -> load, warm and swap in a model (admin scope); SIGHUP does the same
    GET  /healthz /readyz   liveness (open) and readiness (503 while starting or draining)
    GET  /metrics           Prometheus
    GET  /docs              OpenAPI

Inputs are what the task predicts from: texts (classification, NER), {question, context} (QA), texts with
entity markers or {text, head, tail} (relations). Status codes: 401 no or unknown key, 403 key without the
scope, 413 over a size limit, 422 malformed or invalid input (the field named), 429 queue full (Retry-After),
503 draining, 504 no answer within the request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from transferkit.errors import TransferkitError
from transferkit.serve import models
from transferkit.serve.auth import KeyStore, Principal
from transferkit.serve.batcher import Batcher, Draining, QueueFull
from transferkit.serve.metrics import ServiceMetrics
from transferkit.serve.pii import mask
from transferkit.serve.settings import ServeSettings

log = logging.getLogger("transferkit.serve")
access = logging.getLogger("transferkit.serve.access")


class PredictRequest(BaseModel):
    inputs: list[Union[str, dict[str, Any]]] = Field(
        ..., min_length=1, description="Texts, or the task's records ({question, context}; {text, head, tail}; "
        "a dialogue's {turns: [...]} or {messages: [{role, content}, ...]}).")
    pairs: list[str] | None = Field(None, description="Second texts of text-pair classification, one per input.")


class ExplainRequest(BaseModel):
    inputs: list[Union[str, dict[str, Any]]] = Field(..., min_length=1, description="Texts whose predictions are "
                                                     "explained ({question, context} records for QA).")
    method: str = Field("ig", description="ig (integrated gradients) or rollout (attention rollout).")
    target: str | None = Field(None, description="The label to explain (default: the predicted one).")
    steps: int = Field(32, ge=2, le=256, description="Integration points of integrated gradients.")


#: explanations run a forward and backward pass per integration point: fewer texts per request than predict
MAX_EXPLAIN_INPUTS = 16


class ReloadRequest(BaseModel):
    path: str | None = Field(None, description="Folder of the new model; default: reload the served folder.")


def _strings(item: Any) -> list[str]:
    """Every text inside an input (a record's fields, a dialogue's turns and message contents)."""
    if isinstance(item, str):
        return [item]
    if isinstance(item, dict):
        return [t for v in item.values() for t in _strings(v)]
    if isinstance(item, list):
        return [t for v in item for t in _strings(v)]
    return []


def _masked(item: Any, mask: Any) -> Any:
    """The input with every text inside it (record fields, dialogue turns, message contents) masked."""
    if isinstance(item, str):
        return mask(item)
    if isinstance(item, dict):
        return {k: _masked(v, mask) for k, v in item.items()}
    if isinstance(item, list):
        return [_masked(v, mask) for v in item]
    return item


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def create_app(settings: ServeSettings, loaded: models.Loaded | None = None, keys: KeyStore | None = None) -> FastAPI:
    """The service for `settings.model` (loaded and warmed here, before the app exists, so that a bad folder
    fails at once). `keys`: the API keys (default: from settings.api_keys and the environment)."""
    keys = keys if keys is not None else KeyStore.load(settings.api_keys)
    if settings.auth and not len(keys):
        raise TransferkitError("serve: no API keys. Give --api-keys FILE (or set TRANSFERKIT_API_KEYS), or --no-auth "
                               "on a trusted network only. `transferkit keys new` makes a key.")
    holder = models.ModelHolder(loaded or models.load(settings.model, settings.int8), settings.int8)
    metrics = ServiceMetrics()
    explaining = asyncio.Lock()
    batcher = Batcher(holder, metrics, max_queue=settings.max_queue, max_batch_tokens=settings.max_batch_tokens,
                      max_batch_inputs=settings.max_batch_inputs, max_wait_ms=settings.max_wait_ms,
                      batch_size=settings.batch_size)
    state = {"ready": False}
    metrics.set_model(holder.current.version, _info(holder.current), None)

    async def reload(path: str | None) -> tuple[str, str]:
        old, new = await asyncio.get_running_loop().run_in_executor(None, holder.swap, Path(path) if path else None)
        metrics.set_model(new.version, _info(new), old.version)
        metrics.swaps.inc()
        log.info("model swapped: %s -> %s", old.version, new.version)
        return old.version, new.version

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        loop = asyncio.get_running_loop()
        try:  # SIGHUP reloads the served folder (main thread of a real server only)
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_sighup()))
            hup = True
        except (RuntimeError, ValueError, NotImplementedError):
            hup = False
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()
        log.info("stopped after answering every queued request (%s model batches)", batcher.batches)
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)

    async def _sighup() -> None:
        try:
            await reload(None)
        except Exception as e:  # noqa: BLE001 - a bad new folder keeps the old model serving
            log.error("SIGHUP reload failed, still serving %s: %s", holder.current.version, e)

    app = FastAPI(title="transferkit", version="1", lifespan=lifespan,
                  description=f"Serving {settings.model} ({holder.current.info.get('task')}).")
    app.state.holder, app.state.batcher, app.state.metrics, app.state.settings = holder, batcher, metrics, settings

    def principal(scope: str):
        def check(request: Request) -> Principal | None:
            if not settings.auth:
                return None
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
            who = keys.check(key)
            if who is None:
                raise HTTPException(401, "missing or unknown API key: send `Authorization: Bearer <key>` or "
                                         "`X-API-Key: <key>`", headers={"WWW-Authenticate": "Bearer"})
            if scope not in who.scopes:
                raise HTTPException(403, f"the key '{who.name}' has no '{scope}' scope")
            request.state.principal = who.name
            return who
        return check

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            secs = time.perf_counter() - t
            metrics.requests.labels(route=path, status=str(status)).inc()
            metrics.latency.labels(route=path).observe(secs)
            if path.startswith("/v1/"):
                extra = getattr(request.state, "log_extra", "")
                access.info("%s %s %s %.1fms key=%s%s", request.method, path, status, secs * 1000,
                            getattr(request.state, "principal", "-"), extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                problems.append(f"the request body is not valid JSON ({e.get('msg', '')})")
            else:
                problems.append(f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}")
        metrics.rejected.labels(reason="invalid").inc()
        return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)

    @app.post("/v1/predict")
    async def predict(req: PredictRequest, request: Request, _: Any = Depends(principal("predict"))):
        if len(req.inputs) > settings.max_texts:
            metrics.rejected.labels(reason="too_many_inputs").inc()
            raise HTTPException(413, f"{len(req.inputs)} inputs in one request; the limit is {settings.max_texts}: "
                                     "split the request")
        for i, item in enumerate(req.inputs):
            texts = _strings(item)
            longest = max((len(t) for t in texts), default=0)
            if longest > settings.max_chars:
                metrics.rejected.labels(reason="too_long").inc()
                raise HTTPException(413, f"inputs[{i}] has {longest} characters; the limit is {settings.max_chars}")
            if isinstance(item, str) and not item.strip():
                raise HTTPException(422, f"inputs[{i}] is empty: nothing to predict")
        if req.pairs is not None and len(req.pairs) != len(req.inputs):
            raise HTTPException(422, f"pairs has {len(req.pairs)} texts for {len(req.inputs)} inputs: give one each")
        try:  # the task's own checks (a QA record without context, a relation without markers...)
            holder.current.predictor.examples(list(req.inputs), req.pairs)
        except TransferkitError as e:
            metrics.rejected.labels(reason="invalid").inc()
            raise HTTPException(422, f"inputs: {e}") from None
        if settings.log_texts:
            request.state.log_extra = " inputs=" + repr([_masked(t, mask) for t in req.inputs])[:2000]
        else:
            request.state.log_extra = f" inputs={len(req.inputs)}"
        t = time.perf_counter()
        try:
            preds, version = await batcher.submit(list(req.inputs), req.pairs, settings.timeout_s)
        except QueueFull as e:
            metrics.rejected.labels(reason="queue_full").inc()
            wait = max(1, math.ceil(batcher.waiting / max(settings.max_batch_inputs, 1)))
            raise HTTPException(429, str(e), headers={"Retry-After": str(wait)}) from None
        except Draining:
            raise HTTPException(503, "the service is shutting down; retry on another instance") from None
        except asyncio.TimeoutError:
            metrics.rejected.labels(reason="timeout").inc()
            raise HTTPException(504, f"no answer within {settings.timeout_s:g}s (the service is overloaded)") from None
        return {"predictions": preds, "model_version": version, "took_ms": round(1000 * (time.perf_counter() - t), 2)}

    @app.post("/v1/explain")
    async def explain(req: ExplainRequest, _: Any = Depends(principal("predict"))):
        from transferkit.evaluation import attributions as at

        if len(req.inputs) > MAX_EXPLAIN_INPUTS:
            metrics.rejected.labels(reason="too_many_inputs").inc()
            raise HTTPException(413, f"{len(req.inputs)} inputs to explain in one request; the limit is "
                                     f"{MAX_EXPLAIN_INPUTS}: split the request")
        for i, item in enumerate(req.inputs):
            longest = max((len(t) for t in _strings(item)), default=0)
            if longest > settings.max_chars:
                metrics.rejected.labels(reason="too_long").inc()
                raise HTTPException(413, f"inputs[{i}] has {longest} characters; the limit is {settings.max_chars}")
            if isinstance(item, str) and not item.strip():
                raise HTTPException(422, f"inputs[{i}] is empty: nothing to explain")
        method = {"ig": "integrated_gradients", "rollout": "attention_rollout"}.get(req.method, req.method)
        if explaining.locked():  # one at a time: each holds the model thread for many forward and backward passes
            metrics.rejected.labels(reason="busy").inc()
            raise HTTPException(429, "an explanation is being computed; retry shortly", headers={"Retry-After": "1"})
        cur = holder.current
        t = time.perf_counter()
        async with explaining:
            try:  # on the model's own thread, between prediction batches (the event loop stays free)
                rows = await asyncio.wait_for(batcher.on_model_thread(
                    at.explain, cur.predictor, list(req.inputs), method=method, target=req.target, steps=req.steps),
                    settings.timeout_s)
            except TransferkitError as e:
                raise HTTPException(422, f"explain: {e}") from None
            except Draining:
                raise HTTPException(503, "the service is shutting down; retry on another instance") from None
            except asyncio.TimeoutError:
                metrics.rejected.labels(reason="timeout").inc()
                raise HTTPException(504, f"no explanation within {settings.timeout_s:g}s: fewer texts or "
                                         "steps") from None
        return {"explanations": rows, "model_version": cur.version,
                "took_ms": round(1000 * (time.perf_counter() - t), 2)}

    @app.get("/v1/model")
    async def model_info(_: Any = Depends(principal("predict"))):
        cur = holder.current
        return {"version": cur.version, "loaded_at": cur.loaded_at,
                **{k: v for k, v in cur.info.items() if k != "path"}}

    @app.post("/v1/admin/reload")
    async def admin_reload(req: ReloadRequest | None = None, _: Any = Depends(principal("admin"))):
        path = req.path if req else None
        try:
            old, new = await reload(path)
        except TransferkitError as e:
            raise HTTPException(422, f"reload failed, still serving {holder.current.version}: {e}") from None
        return {"previous_version": old, "version": new}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"] or batcher.draining:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "version": holder.current.version}

    @app.get("/metrics")
    async def prometheus(_: Any = Depends(principal("predict"))):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _info(loaded: models.Loaded) -> dict[str, str]:
    return {"task": str(loaded.info.get("task")), "backend": str(loaded.info.get("backend"))}


def from_environment() -> FastAPI:
    """The app of one worker of `transferkit serve --workers N` (settings from TRANSFERKIT_SERVE_SETTINGS)."""
    import os

    return create_app(ServeSettings.model_validate_json(os.environ["TRANSFERKIT_SERVE_SETTINGS"]))
