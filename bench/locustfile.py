"""Locust user for bench/serve_load.py: POST /v1/predict with one Rotten Tomatoes test text per request, no
think time (closed loop: each user waits for its answer, then sends the next). 429 answers are counted apart
from other failures (failure message "429")."""

import json
import os
import random

from locust import FastHttpUser, constant, task

TEXTS = json.loads(open(os.environ["LOAD_TEXTS"], encoding="utf-8").read())
HEADERS = {"Authorization": f"Bearer {os.environ['LOAD_KEY']}"} if os.environ.get("LOAD_KEY") else {}


class Client(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        body = {"inputs": [random.choice(TEXTS)]}
        with self.client.post("/v1/predict", json=body, headers=HEADERS, catch_response=True) as r:
            if r.status_code == 429:
                r.failure("429")
            elif r.status_code != 200:
                r.failure(str(r.status_code))
