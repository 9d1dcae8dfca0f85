"""`transferkit bot` behind a real HTTP server: /v1/chat's auth, limits and input errors (status codes and messages),
an answer and a hand-off over HTTP (the hand-off in the database), the chat page in Debian's headless chromium
driven by selenium (log in, type a question, the answer appears; a nonsense message shows the hand-off), and
`bot build` + `bot evaluate` end to end on the real corpus with the tiny model."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.apps.bot import BotConfig
from transferkit.apps.bot.bot import Bot, PredictorIntents
from transferkit.apps.bot.index import Entry, FaqIndex
from transferkit.apps.bot.store import Store
from transferkit.apps.bot.web import create_bot_app
from transferkit.cli import app as cli
from transferkit.config import load_config
from transferkit.recipes import finetune
from transferkit.serve.auth import KeyStore

from conftest import make_rows, tiny_config, write_config, write_csv
from test_serve import Server

CHAT_KEY = "chat-key-0123456789"
INGEST_KEY = "ingest-key-0123456789"
KEYS = KeyStore.load(None, env=f"web:predict:{CHAT_KEY},feed:ingest:{INGEST_KEY}")
# the FAQ of tests/unit/test_bot.py, embedded by counting known words (hand-computable cosines)
QUESTIONS = ["how do i reset my password", "how much does the python course cost",
             "how much does the java course cost", "what is the java course", "where is the office"]
ANSWERS = ["Use the reset link on the login page.", "The Python course costs 100 euros.",
           "The Java course costs 120 euros.", "Twelve weeks of Java, online.", "At 1 Main Street."]


class BagOfWords:
    def __init__(self, texts):
        self.vocab = {w: i for i, w in enumerate(sorted({w for t in texts for w in t.lower().split()}))}

    def __call__(self, texts):
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                if w in self.vocab:
                    out[r, self.vocab[w]] += 1
        return out


def entries():
    return [Entry(q, "faq", [a]) for q, a in zip(QUESTIONS, ANSWERS)]


@pytest.fixture(scope="module")
def intent_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("bot_runs")
    data = write_csv(root / "d.csv", make_rows(120, seed=3))
    finetune.run(load_config(raw=tiny_config(tiny_model, data, root, name="intents", train={"epochs": 1})),
                 progress=False)
    return root / "intents"


@pytest.fixture
def bot(intent_run, tmp_path):
    cfg = load_config(raw={"name": "web", "output_dir": str(tmp_path / "{name}"), "language": "en",
                           "intents": {"run": str(intent_run)}, "encoder": {"path": "minilm"},
                           "answer": {"threshold": 0.5, "intent_weight": 0.0},
                           "web": {"max_chars": 200}}, schema=BotConfig)
    emb = BagOfWords(QUESTIONS)
    b = Bot(cfg, FaqIndex.build(entries(), emb, kind="exact"), emb, PredictorIntents(intent_run),
            Store(cfg.database_url()), 0.5)
    yield b
    b.close()


def test_chat_endpoint_auth_limits_answer_and_handoff(bot):
    with Server(create_bot_app(bot, KEYS)) as s:
        url = s.url + "/v1/chat"
        body = {"session": "s1", "message": "how do i reset my password"}
        r = httpx.post(url, json=body)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        r = httpx.post(url, json=body, headers={"X-API-Key": INGEST_KEY})
        assert r.status_code == 403 and "none of the scopes predict, admin" in r.json()["detail"]
        H = {"Authorization": f"Bearer {CHAT_KEY}"}
        r = httpx.post(url, json={"session": "s1", "message": "x" * 201}, headers=H)
        assert r.status_code == 413 and "201 characters; the limit is 200" in r.json()["detail"]
        r = httpx.post(url, json={"session": "s1", "message": "   "}, headers=H)
        assert r.status_code == 422 and "message: empty" in r.json()["detail"]
        r = httpx.post(url, json={"session": "s1"}, headers=H)
        assert r.status_code == 422 and "message: Field required" in r.json()["detail"]
        r = httpx.post(url, content=b"{", headers={**H, "Content-Type": "application/json"})
        assert r.status_code == 422
        r = httpx.post(url, json={"session": "", "message": "hi"}, headers=H)
        assert r.status_code == 422 and "session" in r.json()["detail"]
        r = httpx.post(url, json=body, headers=H)
        assert r.status_code == 200
        a = r.json()
        assert a["reply"] == "Use the reset link on the login page." and not a["handed_off"]
        assert a["score"] == 1.0 and a["candidates"][0]["question"] == body["message"]
        assert a["intent"] in ("positive", "negative") and len(a["candidates"]) == 5
        r = httpx.post(url, json={"session": "s2", "message": "quantum banana telescope"}, headers=H)
        assert r.status_code == 200 and r.json()["handed_off"] and "human" in r.json()["reply"]
    rows = bot.store.turns() if bot.store else []
    assert [(x["session"], x["handed_off"]) for x in rows] == [("s1", False), ("s2", True)]


def test_chat_page_in_a_real_browser(bot, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(create_bot_app(bot, KEYS)) as s:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            driver.get(s.url + "/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
            driver.find_element(By.ID, "key").send_keys("wrong-key")
            driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
            wait.until(lambda d: d.find_element(By.ID, "error").text == "unknown key")
            driver.find_element(By.ID, "key").clear()
            driver.find_element(By.ID, "key").send_keys(CHAT_KEY)
            driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
            wait.until(lambda d: d.find_element(By.ID, "chat").is_displayed())
            box = driver.find_element(By.ID, "message")
            box.send_keys("what is the java course")
            driver.find_element(By.ID, "send").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li.bot")) == 1)
            li = driver.find_element(By.CSS_SELECTOR, "#log li.bot")
            assert "Twelve weeks of Java, online." in li.text and li.get_attribute("data-handed-off") == "false"
            box.send_keys("how much does it cost")  # a follow-up: resolved with the previous turn
            driver.find_element(By.ID, "send").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li.bot")) == 2)
            li = driver.find_elements(By.CSS_SELECTOR, "#log li.bot")[1]
            assert "The Java course costs 120 euros." in li.text and "with context" in li.text
            box.send_keys("zorp quibble flarn wibble")
            driver.find_element(By.ID, "send").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li.bot")) == 3)
            li = driver.find_elements(By.CSS_SELECTOR, "#log li.bot")[2]
            assert li.get_attribute("data-handed-off") == "true" and "handoff" in li.get_attribute("class")
            assert "human" in li.text
            assert [x.text for x in driver.find_elements(By.CSS_SELECTOR, "#log li.user")] == [
                "what is the java course", "how much does it cost", "zorp quibble flarn wibble"]
            assert driver.save_screenshot(str(tmp_path / "chat.png"))
        finally:
            driver.quit()
    rows = bot.store.turns() if bot.store else []
    assert [x["handed_off"] for x in rows] == [False, False, True] and rows[1]["used_context"]
    assert len({x["session"] for x in rows}) == 1 and rows[0]["session"].startswith("web-")


def test_bot_build_and_evaluate_commands_on_the_real_corpus(tiny_model, tmp_path):
    runner = CliRunner()
    intents = tiny_config(tiny_model, {"source": "chatterbot_intents_en",
                                       "split": {"validation": 0.1, "test": 0.1, "seed": 1}},
                          tmp_path, name="intents_en", train={"epochs": 1, "batch_size": 64})
    intents_cfg = write_config(tmp_path / "intents.yaml", intents)
    raw = {"name": "bot", "output_dir": str(tmp_path / "{name}"), "language": "en",
           "intents": {"run": str(tmp_path / "intents_en"), "config": str(intents_cfg)},
           "encoder": {"path": str(tiny_model), "max_length": 32}}
    config = write_config(tmp_path / "bot.yaml", raw)
    r = runner.invoke(cli, ["bot", "evaluate", str(config), "-q"])
    assert r.exit_code == 2 and "bot build" in r.output
    bad = write_config(tmp_path / "bad.yaml", {**raw, "intents": {"run": str(tmp_path / "elsewhere"),
                                                                  "config": str(intents_cfg)}})
    r = runner.invoke(cli, ["bot", "build", str(bad), "-q"])
    assert r.exit_code == 2 and "make them the same folder" in r.output
    r = runner.invoke(cli, ["bot", "build", str(config), "-q"])
    assert r.exit_code == 0, r.output
    assert "864 questions" in r.output and "exact search" in r.output and "trained" in r.output
    r = runner.invoke(cli, ["bot", "evaluate", str(config), "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "bot" / "metrics.json").read_text())
    assert set(m["retrievers"]) == {"tfidf", "embedding", "embedding+intent"}
    assert m["paraphrases"]["test"]["in_scope"] == 45 and m["paraphrases"]["validation"]["out_of_scope"] == 5
    tf = m["retrievers"]["tfidf"]["test"]
    assert 0 < tf["recall@1"] <= tf["recall@5"] <= 1 and tf["recall@1"] <= tf["mrr"] <= 1
    assert json.loads((tmp_path / "bot" / "threshold.json").read_text())["threshold"] == m["threshold"]
    assert "| tfidf |" in (tmp_path / "bot" / "report.md").read_text()
