"""A screenshot of the monitor's dashboard over a replayed database, taken in Debian's headless chromium (selenium):

    transferkit monitor replay configs/monitor_guardian.yaml guardian_headlines --fresh
    python bench/monitor_screenshot.py configs/monitor_guardian.yaml docs/img/monitor_dashboard.png

It starts the dashboard of the config on a free loopback port (the models are loaded, no text is ingested), waits
until the page has drawn the alerts, opens the first alert's evidence and saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1250)
    args = ap.parse_args()

    import httpx
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from transferkit.apps.monitor import Monitor, MonitorConfig
    from transferkit.apps.monitor.web import create_monitor_app
    from transferkit.config import load_config
    from transferkit.serve.auth import KeyStore

    cfg = load_config(args.config, ["web.auth=false", "ingest.watch=null"], schema=MonitorConfig)
    monitor = Monitor(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_monitor_app(monitor, KeyStore([])), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={args.width},{args.height}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(lambda d: "live" in d.find_element(By.ID, "status").get_attribute("class"))
        alerts = driver.find_elements(By.CSS_SELECTOR, "#alerts li.alert details summary")
        if alerts:
            alerts[0].click()
        time.sleep(0.5)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"{args.out}: {len(alerts)} alerts on the page", file=sys.stderr)
    finally:
        driver.quit()
        server.should_exit = True
        t.join(timeout=10)
        monitor.close()


if __name__ == "__main__":
    main()
