"""`transferkit monitor` with a real fine-tuned run folder behind a real HTTP server: the ingest endpoint's auth,
scopes, limits and input errors (status codes and messages), a burst of negative texts posted over HTTP firing
one alert, a watched folder ingested once, the `monitor replay` command's report, and the dashboard in Debian's
headless chromium driven by selenium (login, then the alert appears live in the DOM)."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

from transferkit.apps.monitor import Monitor, MonitorConfig
from transferkit.apps.monitor.web import create_monitor_app
from transferkit.cli import app as cli
from transferkit.config import load_config
from transferkit.recipes import finetune
from transferkit.serve.auth import KeyStore

from conftest import NEG, POS, make_rows, tiny_config, write_config, write_csv
from test_serve import Server

INGEST_KEY = "ingest-key-0123456789"
READ_KEY = "reader-key-0123456789"
KEYS = KeyStore.load(None, env=f"feed:ingest:{INGEST_KEY},viewer:predict:{READ_KEY}")
D0 = datetime(2020, 3, 2)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor_runs")
    data = write_csv(root / "d.csv", make_rows(240, seed=1))
    finetune.run(load_config(raw=tiny_config(tiny_model, data, root, name="sent", train={"epochs": 4, "seed": 7})),
                 progress=False)
    return root / "sent"


def cfg_raw(run, folder, **kw):
    raw = {"name": "web", "output_dir": str(folder / "{name}"), "models": {"sentiment": {"path": str(run)}},
           "window": "1d", "rules": [{"name": "negative_rise", "kind": "share_rise", "model": "sentiment",
                                      "label": "negative", "points": 20, "baseline_windows": 3, "min_count": 8}],
           "web": {"refresh_s": 0.3}}
    raw.update(kw)
    return raw


def feed(days, per_day, neg_every=5, burst_day=None, burst=0):
    """Texts in the fixture's words: one in `neg_every` negative; `burst` extra negatives on `burst_day`."""
    out = []
    for d in range(days):
        for i in range(per_day + (burst if d == burst_day else 0)):
            neg = i % neg_every == 0 or i >= per_day
            word = (NEG if neg else POS)[i % len(POS)]
            out.append({"text": f"the film was {word} number {i} day {d}",
                        "date": (D0 + timedelta(days=d, minutes=20 * i)).isoformat()})
    return out


def test_ingest_endpoint_auth_limits_and_a_burst_alert(run, tmp_path):
    monitor = Monitor(load_config(raw=cfg_raw(run, tmp_path, web={"max_texts": 300}), schema=MonitorConfig))
    with Server(create_monitor_app(monitor, KEYS)) as s:
        url = s.url + "/v1/ingest"
        body = {"texts": feed(1, 3)}
        assert httpx.post(url, json=body).status_code == 401
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {READ_KEY}"})
        assert r.status_code == 403 and "none of the scopes ingest, admin" in r.json()["detail"]
        H = {"X-API-Key": INGEST_KEY}
        r = httpx.post(url, json={"texts": [{"text": "good", "date": "someday"}]}, headers=H)
        assert r.status_code == 422 and "texts[0]: 'someday' is not a time" in r.json()["detail"]
        r = httpx.post(url, json={"texts": [{"body": "x"}]}, headers=H)
        assert r.status_code == 422 and "texts[0]: no 'text' field" in r.json()["detail"]
        assert httpx.post(url, json={"texts": ["x"] * 301}, headers=H).status_code == 413
        assert httpx.post(url, content=b"{", headers={**H, "Content-Type": "application/json"}).status_code == 422
        days = feed(6, 12, burst_day=4, burst=12)
        alerts, stored = [], 0
        for d in range(6):  # one POST a day, as a feed would bring them
            part = [t for t in days if t["date"].startswith((D0 + timedelta(days=d)).date().isoformat())]
            r = httpx.post(url, json={"texts": part}, headers=H, timeout=60)
            assert r.status_code == 200, r.text
            stored += r.json()["stored"]
            alerts += r.json()["alerts"]
        assert stored == len(days)
        assert [(a["rule"], a["window_start"][:10]) for a in alerts] == [("negative_rise", "2020-03-06")]
        again = httpx.post(url, json={"texts": days[:10]}, headers=H).json()
        assert (again["stored"], again["duplicates"]) == (0, 10)
        assert httpx.get(s.url + "/api/summary").status_code == 401
        summ = httpx.get(s.url + "/api/summary", headers={"X-API-Key": READ_KEY}).json()
        assert summ["totals"]["texts"] == len(days) and len(summ["windows"]) == 6
        assert summ["windows"][4]["count"] == 24 and summ["windows"][4]["shares"]["sentiment"]["negative"] > 0.5
        a = httpx.get(s.url + "/api/alerts", headers={"X-API-Key": READ_KEY}).json()["alerts"]
        assert len(a) == 1 and len(a[0]["evidence"]) == 10
        assert all(e["predictions"]["sentiment"]["label"] == "negative" for e in a[0]["evidence"])
    monitor.close()


def test_watched_folder_is_ingested_once(run, tmp_path):
    watch = tmp_path / "inbox"
    raw = cfg_raw(run, tmp_path, ingest={"watch": str(watch), "poll_s": 0.1}, web={"auth": False})
    monitor = Monitor(load_config(raw=raw, schema=MonitorConfig))
    with Server(create_monitor_app(monitor)) as s:
        watch.mkdir(exist_ok=True)
        (watch / "day1.jsonl").write_text("".join(json.dumps(t) + "\n" for t in feed(2, 5)))
        (watch / "broken.csv").write_text("when,body\n2020-01-01,x\n")
        for _ in range(100):
            if httpx.get(s.url + "/healthz").json()["texts"] == 10:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # more ticks: nothing is read twice
        assert httpx.get(s.url + "/healthz").json()["texts"] == 10
        errors = s.server.config.app.state.watcher.errors
        assert len(errors) == 1 and "broken.csv: no 'text' column" in errors[0]
    monitor.close()


def test_replay_command_writes_the_report(run, tmp_path):
    path = tmp_path / "feed.csv"
    write_csv(path, feed(6, 12, burst_day=4, burst=12), ["date", "text"])
    config = write_config(tmp_path / "monitor.yaml", cfg_raw(run, tmp_path))
    r = CliRunner().invoke(cli, ["monitor", "replay", str(config), str(path), "-q", "--fresh"])
    assert r.exit_code == 0, r.output
    assert "negative_rise" in r.output and "84 texts stored" in r.output
    folder = tmp_path / "web"
    report = (folder / "report.md").read_text()
    assert "| 2020-03-06 | negative_rise | negative |" in report and (folder / "monitor.png").stat().st_size > 5000
    assert json.loads((folder / "replay.json").read_text())["stored"] == 84
    r = CliRunner().invoke(cli, ["monitor", "replay", str(config), str(path), "-q"])
    assert r.exit_code == 0 and "0 texts stored, 84 already there" in r.output
    r = CliRunner().invoke(cli, ["monitor", "replay", str(config), str(tmp_path / "missing.csv"), "-q"])
    assert r.exit_code == 2 and "is not a file" in r.output


def test_dashboard_in_a_real_browser_updates_live(run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monitor = Monitor(load_config(raw=cfg_raw(run, tmp_path), schema=MonitorConfig))
    days = feed(6, 12, burst_day=4, burst=12)
    with Server(create_monitor_app(monitor, KEYS)) as s:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            driver.get(s.url + "/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())  # no key yet: the login form
            driver.find_element(By.ID, "key").send_keys(READ_KEY)
            driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
            wait.until(lambda d: "live" in d.find_element(By.ID, "status").get_attribute("class"))
            assert driver.find_element(By.ID, "totals-texts").text == "0"
            assert driver.find_elements(By.CSS_SELECTOR, "#alerts li.alert") == []
            httpx.post(s.url + "/v1/ingest", json={"texts": [t for t in days if t["date"] < "2020-03-05"]},
                       headers={"X-API-Key": INGEST_KEY}, timeout=60)
            wait.until(lambda d: d.find_element(By.ID, "totals-texts").text == "36")
            assert driver.find_elements(By.CSS_SELECTOR, "#alerts li.alert") == []
            httpx.post(s.url + "/v1/ingest", json={"texts": [t for t in days if t["date"] >= "2020-03-05"]},
                       headers={"X-API-Key": INGEST_KEY}, timeout=60)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts li.alert")) == 1)
            li = driver.find_element(By.CSS_SELECTOR, "#alerts li.alert")
            assert li.get_attribute("data-rule") == "negative_rise" and "2020-03-06" in li.text
            assert len(driver.find_elements(By.CSS_SELECTOR, "#alerts li.alert ol.evidence li")) == 10
            assert driver.find_element(By.ID, "totals-texts").text == str(len(days))
            lines = driver.find_elements(By.CSS_SELECTOR, "svg.chart[data-model=sentiment] polyline.series")
            assert sorted(x.get_attribute("data-label") for x in lines) == ["negative", "positive"]
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart[data-model=sentiment] rect.alert-band")) == 1
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.volume rect.bar")) == 6
            assert driver.save_screenshot(str(tmp_path / "dashboard.png"))
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000
        finally:
            driver.quit()
    monitor.close()
