"""`transferkit monitor`: texts in (replayed files, a watched folder, POST /v1/ingest), classified by run folders,
stored in a database, aggregated by time window, judged by alert rules, alerts out (log, webhooks), and a live
dashboard. docs/applications.md."""

from transferkit.apps.monitor.engine import Monitor
from transferkit.apps.monitor.settings import MonitorConfig

__all__ = ["Monitor", "MonitorConfig"]
