"""`transferkit serve`: a run or export folder as an authenticated, rate-limited, monitored REST service.

    settings.py  what can be set (ServeSettings)      auth.py     API keys, hashed, with scopes
    models.py    the loaded model, its version, swaps  batcher.py  dynamic batching by token budget
    metrics.py   Prometheus metrics                    pii.py      masking of e-mails, phones, ID numbers
    app.py       the FastAPI application
"""

from transferkit.serve.app import create_app
from transferkit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
