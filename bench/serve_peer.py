"""The server a user would write by hand: FastAPI calling transformers.pipeline on each request (the peer of
`transferkit serve` in bench/serve_load.py). Same route and body as ours, no authentication, no batching.

    MODEL=runs/sentiment/model uvicorn --app-dir bench serve_peer:app --port 8001
"""

import os

from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

pipe = pipeline("text-classification", model=os.environ["MODEL"], device="cpu")
app = FastAPI()


class Request(BaseModel):
    inputs: list[str]


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/v1/predict")
def predict(req: Request):
    return {"predictions": pipe(req.inputs)}
