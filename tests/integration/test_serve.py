"""`transferkit serve` on a real HTTP server (uvicorn on loopback): authentication and scopes, limits and
malformed input with their status codes and messages, batched answers equal single ones, back-pressure (429),
PII masked in logs, Prometheus metrics, and a hot swap under concurrent load that loses no request."""


import logging
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from transferkit.config import load_config
from transferkit.errors import ConfigError, TransferkitError
from transferkit.recipes import finetune
from transferkit.serve import ServeSettings, create_app
from transferkit.serve.auth import KeyStore, digest

from conftest import make_rows, qa_rows, tiny_config, write_csv, write_jsonl

PREDICT_KEY = "predict-key-0123456789"
ADMIN_KEY = "admin-key-0123456789ab"
TEXTS = [r["text"] for r in make_rows(40, seed=99)]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_runs")
    data = write_csv(root / "d.csv", make_rows(240, seed=1))
    for name, seed in (("v1", 7), ("v2", 8)):
        finetune.run(load_config(raw=tiny_config(tiny_model, data, root, name=name, train={"epochs": 4, "seed": seed})),
                     progress=False)
    return root


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("keys") / "keys.yaml"
    p.write_text(f"keys:\n  - name: app\n    key: {PREDICT_KEY}\n    scopes: [predict]\n"
                 f"  - name: ops\n    sha256: {digest(ADMIN_KEY)}\n    scopes: [predict, admin]\n")
    return p


class Server:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            try:
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(path, keys_file, **kw):
    return Server(create_app(ServeSettings(model=path, api_keys=keys_file, **kw)))


H = {"Authorization": f"Bearer {PREDICT_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def server(runs, keys_file):
    with serve(runs / "v1", keys_file, max_texts=8, max_chars=200) as s:
        yield s


def test_auth_and_scopes(server):
    body = {"inputs": ["great film"]}
    r = httpx.post(server.url + "/v1/predict", json=body)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(server.url + "/v1/predict", json=body, headers={"Authorization": "Bearer wrong-key-000000000"})
    assert r.status_code == 401
    r = httpx.post(server.url + "/v1/admin/reload", json={}, headers=H)  # a predict key is not an admin key
    assert r.status_code == 403 and "'app' has no 'admin' scope" in r.json()["detail"]
    r = httpx.post(server.url + "/v1/predict", json=body, headers=H)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("positive", "negative")
    assert httpx.post(server.url + "/v1/predict", json=body, headers=ADMIN).status_code == 200  # hashed entry
    assert httpx.get(server.url + "/healthz").status_code == 200  # open
    assert httpx.get(server.url + "/metrics").status_code == 401
    info = httpx.get(server.url + "/v1/model", headers=H).json()
    assert info["task"] == "text_classification" and info["labels"] == ["negative", "positive"]
    assert info["version"].startswith("v1-") and "accuracy" in info["metrics"] and "path" not in info


@pytest.mark.parametrize("body,status,message", [
    ({"inputs": ["x"] * 9}, 413, "9 inputs in one request; the limit is 8"),
    ({"inputs": ["a" * 201]}, 413, "inputs[0] has 201 characters; the limit is 200"),
    ({"inputs": []}, 422, "inputs: List should have at least 1 item"),
    ({"texts": ["a"]}, 422, "inputs: Field required"),
    ({"inputs": "great film"}, 422, "inputs: Input should be a valid list"),
    ({"inputs": ["ok", 3]}, 422, "inputs[1]"),
    ({"inputs": ["ok", "  "]}, 422, "inputs[1] is empty"),
    ({"inputs": ["a", "b"], "pairs": ["c"]}, 422, "pairs has 1 texts for 2 inputs"),
])
def test_limits_and_malformed_input(server, body, status, message):
    r = httpx.post(server.url + "/v1/predict", json=body, headers=H)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_explain_endpoint_gives_complete_attributions_and_refuses_bad_requests(server):
    url = server.url + "/v1/explain"
    assert httpx.post(url, json={"inputs": ["great film"]}).status_code == 401
    r = httpx.post(url, json={"inputs": ["a great and wonderful film", "dull boring plot"], "steps": 32}, headers=H)
    assert r.status_code == 200, r.text
    rows = r.json()["explanations"]
    assert [w["word"] for w in rows[0]["words"]] == "a great and wonderful film".split()
    for e in rows:  # completeness: the words add up to the logit difference from the all-[PAD] baseline
        assert sum(w["attribution"] for w in e["words"]) == pytest.approx(e["logit_difference"], abs=0.05 * abs(
            e["logit_difference"]) + 1e-3)
    assert r.json()["model_version"].startswith("v1-")
    r = httpx.post(url, json={"inputs": ["great film"], "method": "rollout"}, headers=H)
    assert r.status_code == 200 and r.json()["explanations"][0]["method"] == "attention_rollout"
    for body, status, message in [
            ({"inputs": ["x"] * 17}, 413, "17 inputs to explain in one request; the limit is 16"),
            ({"inputs": ["a" * 201]}, 413, "inputs[0] has 201 characters"),
            ({"inputs": [" "]}, 422, "inputs[0] is empty"),
            ({"inputs": ["x"], "method": "saliency"}, 422, "unknown method 'saliency'"),
            ({"inputs": ["x"], "target": "neutral"}, 422, "'neutral' is not a label of this model"),
            ({"inputs": ["x"], "steps": 1000}, 422, "steps")]:
        r = httpx.post(url, json=body, headers=H)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["detail"], (body, r.text)


def test_invalid_json_names_the_problem(server):
    r = httpx.post(server.url + "/v1/predict", content=b'{"inputs": ["a",', headers={**H, "content-type":
                                                                                         "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]


def test_batched_answers_equal_single_ones(server, runs):
    from transferkit.deploy.predictor import Predictor

    alone = [httpx.post(server.url + "/v1/predict", json={"inputs": [t]}, headers=H).json()["predictions"][0]
             for t in TEXTS[:12]]
    direct = Predictor.load(runs / "v1").predict(TEXTS[:12])
    with ThreadPoolExecutor(12) as pool:  # concurrent: merged into shared batches by the batcher
        together = list(pool.map(lambda t: httpx.post(server.url + "/v1/predict", json={"inputs": [t]},
                                                      headers=H).json()["predictions"][0], TEXTS[:12]))
    for a, b, d in zip(alone, together, direct):
        assert a["label"] == b["label"] == d["label"]
        for k in a["probabilities"]:
            assert abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-5
            assert abs(a["probabilities"][k] - d["probabilities"][k]) < 1e-5
    prom = dict(line.split(" ") for line in httpx.get(server.url + "/metrics", headers=H).text.splitlines()
                if line.startswith(("transferkit_batch_requests_count", "transferkit_batch_requests_sum")))
    # some model batch answered more than one request: the concurrent ones were merged
    assert float(prom["transferkit_batch_requests_sum"]) > float(prom["transferkit_batch_requests_count"])


def test_metrics_count_requests_and_labels(server):
    httpx.post(server.url + "/v1/predict", json={"inputs": ["great", "dull"]}, headers=H)
    text = httpx.get(server.url + "/metrics", headers=H).text
    assert 'transferkit_requests_total{route="/v1/predict",status="200"}' in text
    assert 'transferkit_requests_total{route="/v1/predict",status="401"}' in text
    assert "transferkit_request_seconds_bucket" in text and "transferkit_batch_inputs_bucket" in text
    assert 'transferkit_predicted_labels_total{label="positive"}' in text or \
        'transferkit_predicted_labels_total{label="negative"}' in text
    assert "transferkit_queue_inputs 0.0" in text and 'transferkit_model_info{backend="torch"' in text


def test_texts_are_logged_only_when_asked_and_then_masked(runs, keys_file, caplog):
    secret = "write to jane.doe@example.com or call 13812345678, id 11010519491231002X"
    for log_texts in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="transferkit.serve.access"):
            with serve(runs / "v1", keys_file, log_texts=log_texts) as s:
                assert httpx.post(s.url + "/v1/predict", json={"inputs": [secret]}, headers=H).status_code == 200
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "transferkit.serve.access")
        assert "POST /v1/predict 200" in logged and "key=app" in logged
        assert PREDICT_KEY not in logged and "jane.doe" not in logged and "13812345678" not in logged
        assert "11010519491231002X" not in logged
        assert ("[EMAIL]" in logged and "[PHONE]" in logged and "[ID]" in logged) == log_texts


def test_full_queue_answers_429_with_retry_after(runs, keys_file):
    with serve(runs / "v1", keys_file, max_queue=4, max_texts=4, max_wait_ms=200) as s:
        with ThreadPoolExecutor(16) as pool:
            rs = list(pool.map(lambda i: httpx.post(s.url + "/v1/predict", json={"inputs": TEXTS[:3]}, headers=H,
                                                    timeout=30), range(16)))
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        refused = next(r for r in rs if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and "at capacity" in refused.json()["detail"]
        assert httpx.get(s.url + "/healthz").status_code == 200  # still up


def test_hot_swap_under_load_loses_no_request(runs, keys_file, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(runs / "v1", served)
    with serve(served, keys_file) as s:
        before = httpx.get(s.url + "/v1/model", headers=H).json()["version"]
        stop = threading.Event()
        results = []

        def client():
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    r = c.post(s.url + "/v1/predict", json={"inputs": TEXTS[:4]}, headers=H)
                    results.append((r.status_code, r.json().get("model_version")))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        r = httpx.post(s.url + "/v1/admin/reload", json={"path": str(runs / "v2")}, headers=ADMIN, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["previous_version"] == before and r.json()["version"].startswith("v2-")
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        after = httpx.get(s.url + "/v1/model", headers=H).json()["version"]
        metrics = httpx.get(s.url + "/metrics", headers=H).text
    assert len(results) > 20 and all(code == 200 for code, _ in results), {c for c, _ in results}
    versions = [v for _, v in results]
    assert before in versions and after in versions and after != before
    assert versions.index(after) > versions.index(before)
    assert f'transferkit_model_loaded{{version="{after}"}} 1.0' in metrics
    assert f'transferkit_model_loaded{{version="{before}"}} 0.0' in metrics
    assert "transferkit_model_swaps_total 1.0" in metrics


def test_reload_of_a_bad_folder_keeps_the_old_model(server, tmp_path):
    v = httpx.get(server.url + "/v1/model", headers=H).json()["version"]
    r = httpx.post(server.url + "/v1/admin/reload", json={"path": str(tmp_path)}, headers=ADMIN)
    assert r.status_code == 422 and f"still serving {v}" in r.json()["detail"]
    assert httpx.get(server.url + "/v1/model", headers=H).json()["version"] == v


def test_qa_service_takes_records_and_checks_them(tiny_model, tmp_path, keys_file):
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(80))
    finetune.run(load_config(raw=tiny_config(tiny_model, data, tmp_path, name="qa", task={"type": "question_answering"},
                                             train={"epochs": 2})), progress=False)
    with serve(tmp_path / "qa", keys_file) as s:
        ok = httpx.post(s.url + "/v1/predict", headers=H, json={"inputs": [
            {"question": "Who founded Acme?", "context": "Carla founded Acme in the spring."}]})
        assert ok.status_code == 200 and "answer" in ok.json()["predictions"][0]
        bad = httpx.post(s.url + "/v1/predict", headers=H, json={"inputs": [{"question": "Who?"}]})
        assert bad.status_code == 422 and "input 1" in bad.json()["detail"]


def test_keys_file_problems_are_listed(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("keys:\n  - name: a\n    key: short\n  - name: b\n    key: long-enough-key-123\n    scopes: [write]\n"
                 "  - name: c\n    sha256: xyz\n")
    with pytest.raises(ConfigError) as e:
        KeyStore.load(p, env="")
    msg = str(e.value)
    assert "keys[0]: key missing or shorter than 16" in msg and "keys[1]: unknown scope(s) ['write']" in msg
    assert "keys[2]: sha256 must be 64 hex digits" in msg
    store = KeyStore.load(None, env=f"ci:predict:{PREDICT_KEY},ops:predict+admin:{ADMIN_KEY}")
    assert store.check(ADMIN_KEY).scopes == {"predict", "admin"} and store.check("nope") is None


def test_no_keys_refuses_to_start_unless_no_auth(runs, monkeypatch):
    monkeypatch.delenv("TRANSFERKIT_API_KEYS", raising=False)
    with pytest.raises(TransferkitError, match="no API keys"):
        create_app(ServeSettings(model=runs / "v1"))
    app = create_app(ServeSettings(model=runs / "v1", auth=False))
    with Server(app) as s:
        assert httpx.post(s.url + "/v1/predict", json={"inputs": ["fine"]}).status_code == 200



def test_serve_command_sighup_swaps_and_sigterm_stops(runs, keys_file, tmp_path):
    """The real command in its own process: serves, reloads the folder on SIGHUP, stops gracefully on SIGTERM
    (uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM)."""
    import os
    import signal
    import subprocess
    import sys

    served = tmp_path / "served"
    shutil.copytree(runs / "v1", served)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(served), "--port", str(port),
                             "--api-keys", str(keys_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TRANSFERKIT_API_KEYS": ""}, text=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        before = httpx.get(url + "/v1/model", headers=H).json()["version"]
        shutil.rmtree(served / "model")
        shutil.copytree(runs / "v2" / "model", served / "model")  # a new version in the same folder
        proc.send_signal(signal.SIGHUP)
        for _ in range(300):
            if httpx.get(url + "/v1/model", headers=H).json()["version"] != before:
                break
            time.sleep(0.1)
        assert httpx.get(url + "/v1/model", headers=H).json()["version"] != before
        assert httpx.post(url + "/v1/predict", json={"inputs": ["great"]}, headers=H).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGTERM), out
        assert "model swapped" in out and "stopped after answering every queued request" in out
        assert PREDICT_KEY not in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_keys_new_prints_a_key_and_its_hash():
    from typer.testing import CliRunner

    from transferkit.cli import app

    r = CliRunner().invoke(app, ["keys", "new", "--name", "web", "--scope", "predict", "--scope", "admin"])
    assert r.exit_code == 0
    key = r.output.split("key: ", 1)[1].split()[0]
    assert f"sha256: {digest(key)}" in r.output and "scopes: [predict, admin]" in r.output
    bad = CliRunner().invoke(app, ["keys", "new", "--scope", "write"])
    assert bad.exit_code == 2 and "unknown scope" in bad.output


def test_serve_options_that_contradict_are_refused_before_loading(tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    r = CliRunner().invoke(app, ["serve", str(tmp_path), "--max-queue", "4", "--no-auth"])
    assert r.exit_code == 2 and "max_queue (4) must be at least max_texts (64)" in r.output
    r = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), "--no-auth"])
    assert r.exit_code == 2 and "neither a run folder" in r.output
