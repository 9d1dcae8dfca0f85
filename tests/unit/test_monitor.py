"""The monitor (issue 18): rule arithmetic on fixed window statistics; database contents after ingest; a steady
stream fires nothing and a burst fires exactly one alert, with the burst as its evidence; de-duplication across
windows and across a restart; webhooks signed and recorded (and a dead receiver recorded as such); file and
config errors that say where and what."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import os

import pytest
from sqlalchemy import create_engine, text

from transferkit.apps.monitor import Monitor, MonitorConfig
from transferkit.apps.monitor import ingest as I
from transferkit.apps.monitor.rules import judge
from transferkit.apps.monitor.settings import Rule
from transferkit.apps.monitor.store import NewText, WindowStats, window_of
from transferkit.config import load_config
from transferkit.errors import ConfigError, DataError

D0 = datetime(2020, 1, 6)  # a Monday


class Keyword:
    """A stand-in classifier: 'negative' when the text holds a word of `neg`, with a fixed score."""

    def __init__(self, labels, rule):
        self.labels = labels
        self.rule = rule

    def __call__(self, texts, batch_size):
        return [self.rule(t) for t in texts]


def sentiment():
    return Keyword(["negative", "positive"], lambda t: ("negative", 0.95) if "crash" in t else ("negative", 0.9)
                   if "slump" in t else ("positive", 0.8))


def topic():
    return Keyword(["business", "tech"], lambda t: ("tech", 0.7) if "chip" in t else ("business", 0.6))


def config(tmp_path, **kw) -> MonitorConfig:
    raw = {"name": "m", "output_dir": str(tmp_path / "{name}"), "models": {"sentiment": {"path": "x"},
                                                                            "topic": {"path": "y"}},
           "window": "7d",
           "rules": [{"name": "negative_rise", "kind": "share_rise", "model": "sentiment", "label": "negative",
                      "points": 15, "baseline_windows": 4, "min_baseline": 2, "min_count": 10},
                     {"name": "volume", "kind": "volume_spike", "factor": 3, "baseline_windows": 4, "min_count": 10}],
           "alerts": {"evidence": 5}}
    raw.update(kw)
    return load_config(raw=raw, schema=MonitorConfig)


def monitor(cfg) -> Monitor:
    return Monitor(cfg, {"sentiment": sentiment(), "topic": topic()})


PG = os.environ.get("TRANSFERKIT_TEST_POSTGRES")  # .ci/run starts PostgreSQL and sets it


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request):
    """None (SQLite in the monitor's folder) or an empty PostgreSQL database: the same tests on both."""
    if request.param == "sqlite":
        yield None
        return
    if not PG:
        pytest.skip("no PostgreSQL: set TRANSFERKIT_TEST_POSTGRES to a SQLAlchemy URL (.ci/run starts one)")
    from transferkit.apps.monitor.store import Base

    eng = create_engine(PG)
    Base.metadata.drop_all(eng)
    eng.dispose()
    yield PG


def stream(weeks, per_week, negative_every=5, start=D0, tag="") -> list[NewText]:
    """`per_week` texts a week (one a few hours apart), every `negative_every`-th one negative (20%)."""
    out = []
    for w in range(weeks):
        for i in range(per_week):
            ts = start + timedelta(weeks=w, hours=3 * i)
            txt = f"{tag}markets slump week {w} item {i}" if i % negative_every == 0 else f"{tag}shares rise week {w} item {i}"
            out.append(NewText(uid=I.uid_of(ts, txt), ts=ts, text=txt, source="test"))
    return out


def burst(week, n, start=D0) -> list[NewText]:
    out = []
    for i in range(n):
        ts = start + timedelta(weeks=week, hours=1 + 3 * i, minutes=30)
        txt = f"fear of crash number {i}"
        out.append(NewText(uid=I.uid_of(ts, txt), ts=ts, text=txt, source="burst"))
    return out


def stats(i, count, neg):
    start = D0 + timedelta(weeks=i)
    return WindowStats(start, start + timedelta(weeks=1), count,
                       {("s", "negative"): neg, ("s", "positive"): count - neg}, {})


# ---------------------------------------------------------------- rule arithmetic

def test_share_rise_arithmetic_on_fixed_windows():
    rule = Rule(name="r", kind="share_rise", model="s", label="negative", points=10, baseline_windows=3,
                min_baseline=2, min_count=20)
    hist = [stats(0, 100, 90), stats(1, 100, 20), stats(2, 100, 30), stats(3, 50, 10)]  # the first one is too old
    # baseline = mean(0.20, 0.30, 0.20) = 0.2333; 34/100 is +10.67 pt -> fires; 33/100 is +9.67 -> does not
    f = judge(rule, stats(4, 100, 34), hist, {"s": ["negative", "positive"]})
    assert len(f) == 1 and f[0].label == "negative"
    assert f[0].baseline == pytest.approx(0.7 / 3) and f[0].value == pytest.approx(0.34) and f[0].used == 3
    assert "+10.7 pt" in f[0].message
    assert judge(rule, stats(4, 100, 33), hist, {"s": ["negative", "positive"]}) == []
    # windows under min_count neither fire nor count in the baseline
    assert judge(rule, stats(4, 19, 19), hist, {"s": ["negative", "positive"]}) == []
    small = [stats(0, 100, 20), stats(1, 5, 5), stats(2, 5, 5)]
    assert judge(rule, stats(3, 100, 90), small, {}) == []  # one usable baseline window < min_baseline 2
    # '*' watches every label on its own
    star = rule.model_copy(update={"label": "*"})
    f = judge(star, stats(4, 100, 5), hist, {"s": ["negative", "positive"]})
    assert [x.label for x in f] == ["positive"] and f[0].baseline == pytest.approx(1 - 0.7 / 3)


def test_volume_spike_arithmetic():
    rule = Rule(name="v", kind="volume_spike", factor=2.0, baseline_windows=2, min_baseline=2, min_count=10)
    hist = [stats(0, 1000, 0), stats(1, 10, 0), stats(2, 30, 0)]  # baseline: mean(10, 30) = 20
    assert judge(rule, stats(3, 40, 0), hist, {})[0].baseline == pytest.approx(20.0)
    assert judge(rule, stats(3, 39, 0), hist, {}) == []
    assert judge(rule, stats(3, 40, 0), hist[-1:], {}) == []  # too little history


def test_rules_are_checked_against_the_models(tmp_path):
    with pytest.raises(ConfigError) as e:
        config(tmp_path, rules=[{"name": "a", "kind": "share_rise", "model": "sentimnt", "label": "negative"},
                                {"name": "b", "kind": "share_rise"}], window="7 weeks")
    msg = str(e.value)
    assert "rules -> 1: rule 'b': share_rise needs `model`" in msg and "window: '7 weeks' is not a time span" in msg
    with pytest.raises(ConfigError, match=r"rule 'a': model 'sentimnt' is not one of models \(sentiment, topic\)"):
        config(tmp_path, rules=[{"name": "a", "kind": "share_rise", "model": "sentimnt", "label": "negative"}])
    with pytest.raises(ConfigError, match=r"watches label 'negatve'.*Did you mean 'negative'"):
        monitor(config(tmp_path, rules=[{"name": "a", "kind": "share_rise", "model": "sentiment",
                                         "label": "negatve"}]))


# ---------------------------------------------------------------- engine and database

def test_ingest_stores_texts_predictions_and_windows(tmp_path, database):
    cfg = config(tmp_path, database=database)
    m = monitor(cfg)
    items = stream(3, 20)
    res = m.ingest(items)
    assert (res.stored, res.duplicates) == (60, 0)
    eng = create_engine(cfg.database_url())
    with eng.connect() as c:
        assert c.execute(text("select count(*) from texts")).scalar() == 60
        assert c.execute(text("select count(*) from predictions")).scalar() == 120  # two models
        rows = c.execute(text("select p.label, count(*) from predictions p where p.model='sentiment' "
                              "group by p.label order by p.label")).all()
        assert [tuple(r) for r in rows] == [("negative", 12), ("positive", 48)]
        weeks = c.execute(text("select distinct window_start from texts order by 1")).scalars().all()
        assert len(weeks) == 3 and str(weeks[0]).startswith("2020-01-06")
        # windows close when a later text arrives: weeks 1 and 2 are judged, the last one stays open
        assert c.execute(text("select count(*) from windows")).scalar() == 2
    assert m.ingest(items).stored == 0 and m.ingest(items).duplicates == 60  # the same feed again: nothing twice
    assert window_of(datetime(2020, 1, 12, 23, 59), timedelta(days=7)) == D0
    assert window_of(datetime(2020, 1, 13), timedelta(days=7)) == D0 + timedelta(days=7)
    m.close()


def test_steady_stream_fires_nothing_and_a_burst_fires_exactly_one_alert(tmp_path, database):
    m = monitor(config(tmp_path, database=database))
    assert m.ingest(stream(8, 20)).alerts == []
    m.advance(None, final=True)
    assert m.store.alerts() == []
    m.close()
    if database:  # the same database again: start from empty
        from transferkit.apps.monitor.store import Base

        eng = create_engine(database)
        Base.metadata.drop_all(eng)
        eng.dispose()

    m = monitor(config(tmp_path, name="b", database=database))
    feed = stream(8, 20) + burst(5, 12)  # week 5: 4 + 12 negatives out of 32 = 50% vs 20% baseline
    feed.sort(key=lambda t: t.ts)
    fired = m.ingest(feed).alerts + m.advance(m.store.watermark(), final=True)
    assert [a["rule"] for a in fired] == ["negative_rise"]
    a = fired[0]
    assert a["window_start"].startswith("2020-02-10") and a["value"] == pytest.approx(0.5)
    assert a["baseline"] == pytest.approx(0.2) and a["count"] == 32
    assert len(a["evidence"]) == 5 and all(e["text"].startswith("fear of crash") for e in a["evidence"])
    log = [json.loads(x) for x in (m.cfg.folder / "alerts.jsonl").read_text().splitlines()]
    assert [x["id"] for x in log] == [a["id"]]
    m.close()


def test_a_condition_that_holds_is_one_alert_also_after_a_restart(tmp_path, database):
    cfg = config(tmp_path, database=database)
    m = monitor(cfg)
    feed = sorted(stream(8, 20) + burst(4, 12), key=lambda t: t.ts)
    first = [t for t in feed if t.ts < D0 + timedelta(weeks=5, hours=12)]
    assert [a["rule"] for a in m.ingest(first).alerts] == ["negative_rise"]
    m.close()
    m = monitor(cfg)  # a restart: the same database
    later = sorted(burst(5, 12) + [t for t in feed if t.ts >= D0 + timedelta(weeks=5, hours=12)],
                   key=lambda t: t.ts)
    assert m.ingest(feed[:50]).stored == 0  # what was stored is not stored again
    assert m.ingest(later).alerts == []  # week 5 holds too: the same alert, extended
    alerts = m.store.alerts()
    assert len(alerts) == 1 and alerts[0]["windows"] == 2
    m.close()


def test_volume_spike_fires_once(tmp_path):
    m = monitor(config(tmp_path, rules=[{"name": "volume", "kind": "volume_spike", "factor": 3,
                                         "baseline_windows": 3, "min_count": 10}]))
    extra = [NewText(uid=f"x{i}", ts=D0 + timedelta(weeks=4, minutes=i), text=f"shares rise extra {i}", source="t")
             for i in range(60)]
    fired = m.ingest(sorted(stream(7, 20) + extra, key=lambda t: t.ts)).alerts
    assert len(fired) == 1 and fired[0]["count"] == 80 and fired[0]["baseline"] == pytest.approx(20.0)
    m.close()


class Receiver(BaseHTTPRequestHandler):
    got: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def receiver():
    Receiver.got, Receiver.status = [], 200
    srv = HTTPServer(("127.0.0.1", 0), Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def test_webhook_gets_the_signed_alert_and_failures_are_recorded(tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    m = monitor(config(tmp_path, alerts={"webhooks": [{"url": url, "secret": "s3cret"}]}))
    fired = m.ingest(sorted(stream(8, 20) + burst(5, 12), key=lambda t: t.ts)).alerts
    m.notifier.wait(timeout=30)
    assert len(Receiver.got) == 1
    headers, body = Receiver.got[0]
    assert json.loads(body)["alert"]["id"] == fired[0]["id"]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Transferkit-Signature"] == f"sha256={expected}"
    assert m.store.alerts()[0]["deliveries"] == [{"url": url, "delivered": True, "status": 200, "attempts": 1,
                                                  "error": None}]
    m.close()

    Receiver.got, Receiver.status = [], 500
    m = monitor(config(tmp_path, name="dead", alerts={"webhooks": [{"url": url, "retries": 1}]}))
    m.ingest(sorted(stream(8, 20) + burst(5, 12), key=lambda t: t.ts))
    m.notifier.wait(timeout=30)
    d = m.store.alerts()[0]["deliveries"][0]
    assert (d["delivered"], d["status"], d["attempts"], d["error"]) == (False, 500, 2, "HTTP 500")
    assert len(Receiver.got) == 2
    m.close()


def test_files_are_read_with_their_errors_located(tmp_path):
    cfg = config(tmp_path).ingest
    good = tmp_path / "feed.csv"
    good.write_text("date,text\n2020-03-02,markets slump\n2020-03-03T10:00:00+01:00,shares rise\n")
    rows = list(I.read(good, cfg))
    assert [r.text for r in rows] == ["markets slump", "shares rise"]
    assert rows[1].ts == datetime(2020, 3, 3, 9, 0)  # converted to UTC
    bad = tmp_path / "bad.csv"
    bad.write_text("date,body\n2020-03-02,x\n")
    with pytest.raises(DataError, match=r"no 'text' column \(columns: date, body\); set ingest.text_column"):
        list(I.read(bad, cfg))
    when = tmp_path / "when.jsonl"
    when.write_text('{"text": "a", "date": "2020-03-02"}\n{"text": "b", "date": "last tuesday"}\n')
    with pytest.raises(DataError, match=r"when.jsonl:2: 'last tuesday' is not a time"):
        list(I.read(when, cfg))
    with pytest.raises(DataError, match="unknown kind of file"):
        list(I.read(_touch(tmp_path / "a.xml"), cfg))


def _touch(p):
    p.write_text("x")
    return p


def test_a_database_of_another_window_is_refused(tmp_path):
    m = monitor(config(tmp_path))
    m.ingest(stream(1, 5))
    m.close()
    with pytest.raises(ConfigError, match="filled with 604800 s windows, not 86400 s"):
        monitor(config(tmp_path, window="1d"))


def test_a_partial_first_window_is_neither_judged_nor_a_baseline(tmp_path):
    """A feed that starts on a Thursday: its first week holds 4 days of texts, which must not make the first full
    week look like a volume spike (it would: 20 texts vs 8 is 2.5x)."""
    m = monitor(config(tmp_path, rules=[{"name": "volume", "kind": "volume_spike", "factor": 1.5,
                                         "baseline_windows": 2, "min_baseline": 1, "min_count": 5}]))
    thursday = D0 + timedelta(days=3)
    partial = [NewText(uid=f"p{i}", ts=thursday + timedelta(hours=10 * i), text=f"shares rise {i}", source="t")
               for i in range(8)]
    assert m.ingest(partial + stream(4, 20, start=D0 + timedelta(weeks=1))).alerts == []
    m.advance(None, final=True)
    assert m.store.alerts() == []
    eng = create_engine(m.cfg.database_url())
    with eng.connect() as c:
        judged = [str(x)[:10] for x in c.execute(text("select start from windows order by start")).scalars()]
    assert judged == ["2020-01-13", "2020-01-20", "2020-01-27"]  # not the partial week of 2020-01-06
    m.close()


def test_config_validate_knows_the_applications_configs():
    from pathlib import Path

    from typer.testing import CliRunner

    from transferkit.cli import app as cli

    root = Path(__file__).parents[2] / "configs"
    for name, kind in (("monitor_guardian.yaml", "monitor"), ("bot_en.yaml", "bot"), ("recommend.yaml", "recommend")):
        r = CliRunner().invoke(cli, ["config", "validate", str(root / name)])
        assert r.exit_code == 0 and f"is a valid {kind} config" in r.output, r.output
    r = CliRunner().invoke(cli, ["config", "validate", str(root / "monitor_guardian.yaml"), "window=3x"])
    assert r.exit_code == 2 and "window: '3x' is not a time span" in r.output
