"""Model versions and lineage in the MLflow registry (no home-made registry).

Every finished finetune / pretrain / update run becomes an MLflow run (its flattened config as params, its test
and training figures as metrics, its small files as artifacts) and a new version of a registered model whose
source is the run's model folder (not copied: the run folder stays the one place the weights live). The
version's tags carry the lineage: the run folder, the kind of run, the data fingerprint, and for an update the
parent's model version. The new version gets the alias `candidate`; `promote` moves `production` (keeping the
history in a tag of the registered model, so that `rollback` can move it back); `models:/NAME@ALIAS` and
`models:/NAME/VERSION` resolve to the run folder for predict and serve.

Backend: SQLite (`sqlite:///mlruns.db` in the working directory by default; MLflow's file store is in
maintenance mode), artifacts in mlartifacts/ beside it. mlflow-skinny is imported only here, lazily.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError, TransferkitError

log = logging.getLogger(__name__)

ENV = "TRANSFERKIT_REGISTRY"
EXPERIMENT = "transferkit"
RECORD = "registry.json"  # in the run folder: where this run was registered
HISTORY_TAG = "transferkit.production_history"
#: small files of a run folder logged as MLflow artifacts (the model folder is referenced, not copied)
ARTIFACTS = ("config.resolved.yaml", "metrics.json", "report.md", "update.json", "baselines.json", "model/README.md")


class RegistryError(TransferkitError):
    pass


def resolve_uri(uri: str | None = None) -> str | None:
    """The registry URI: the one given (registry.uri, --registry), else TRANSFERKIT_REGISTRY, else
    sqlite:///mlruns.db in the working directory; None when the variable says off and nothing was given."""
    if uri:
        return uri
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return None if env.strip().lower() in ("off", "0", "false", "no") else env.strip()
    return f"sqlite:///{(Path.cwd() / 'mlruns.db').resolve()}"


def _client(uri: str) -> Any:
    import logging as _logging

    _logging.getLogger("alembic").setLevel(_logging.WARNING)
    _logging.getLogger("mlflow").setLevel(_logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment(client: Any, uri: str) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def _metrics(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for group in ("test", "train", "heldout_after"):
        for k, v in (summary.get(group) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{group}.{k}"] = float(v)
    u = summary.get("update") or {}
    for k in ("forgetting", "gain"):
        if isinstance(u.get(k), (int, float)):
            out[f"update.{k}"] = float(u[k])
    return out


def record_of(run_dir: Path) -> dict[str, Any] | None:
    p = Path(run_dir) / RECORD
    return json.loads(p.read_text()) if p.is_file() else None


def register(run_dir: Path, summary: dict[str, Any], cfg: Any, kind: str) -> dict[str, Any] | None:
    """Register a finished run; returns what was recorded (also written to RUN/registry.json), or None when off.
    A failure is logged and does not fail the run (its folder is complete)."""
    reg = getattr(cfg, "registry", None)
    if reg is None or not reg.enabled:
        return None
    uri = resolve_uri(reg.uri)
    if uri is None:
        return None
    try:
        return _register(Path(run_dir).resolve(), summary, cfg, kind, uri)
    except Exception as e:  # noqa: BLE001 - the run is saved; the registry is bookkeeping on top of it
        log.warning("the run is saved in %s, but registering it in %s failed: %s", run_dir, uri, e)
        return None


def _parent_version(parent_rec: dict[str, Any] | None, name: str) -> str:
    """'3' for a version of the same model, 'other/3' for another model's, '' without a registered parent."""
    if not parent_rec:
        return ""
    return str(parent_rec["version"]) if parent_rec["name"] == name else f"{parent_rec['name']}/{parent_rec['version']}"


def _register(run_dir: Path, summary: dict[str, Any], cfg: Any, kind: str, uri: str) -> dict[str, Any]:
    from transferkit.training.checkpoint import atomic_write_text

    client = _client(uri)
    exp = _experiment(client, uri)
    parent = getattr(getattr(cfg, "update", None), "parent", None)
    parent_rec = record_of(Path(parent)) if parent else None
    name = cfg.registry.model_name or (parent_rec["name"] if parent_rec else cfg.name)
    marker = run_dir / ".transferkit-run"
    fingerprint = json.loads(marker.read_text()).get("data") if marker.is_file() else None
    tags = {"transferkit.kind": kind, "transferkit.run_dir": str(run_dir), "transferkit.data_fingerprint":
            str(fingerprint), "transferkit.parent_run": str(parent or ""),
            "transferkit.parent_version": _parent_version(parent_rec, name)}
    tracked = run_dir / "tracking.json"  # tracking.mlflow: the live run of this training gets the rest too
    if tracked.is_file() and json.loads(tracked.read_text()).get("uri") == uri:
        rid = json.loads(tracked.read_text())["mlflow_run_id"]
        for k, v in tags.items():
            client.set_tag(rid, k, v)
    else:
        rid = client.create_run(exp, run_name=cfg.name, tags=tags).info.run_id
    params = _flatten(cfg.model_dump(mode="json"))
    from mlflow.entities import Metric, Param

    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(rid, params=[Param(k[:250], v[:6000]) for k, v in items[i:i + 100]])
    import time

    now = int(time.time() * 1000)
    client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in _metrics(summary).items()])
    for f in ARTIFACTS:
        if (run_dir / f).is_file():
            client.log_artifact(rid, str(run_dir / f), artifact_path=str(Path("run") / Path(f).parent)
                                if "/" in f else "run")
    client.set_terminated(rid)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name, tags={"transferkit.task": str(summary.get("task", kind))})
    source = (run_dir / "model").as_uri()
    mv = client.create_model_version(name, source=source, run_id=rid, tags=tags)
    client.set_registered_model_alias(name, "candidate", mv.version)
    rec = {"uri": uri, "name": name, "version": int(mv.version), "mlflow_run_id": rid,
           "parent": tags["transferkit.parent_version"] or None}
    atomic_write_text(run_dir / RECORD, json.dumps(rec, indent=2))
    log.info("registered as %s version %s (alias candidate) in %s", name, mv.version, uri)
    return rec


# ------------------------------------------------------------------ the models command


def versions(uri: str, name: str | None = None) -> list[dict[str, Any]]:
    client = _client(uri)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for n in names:
        rm = _registered(client, n, uri)
        vs = client.search_model_versions(f"name='{n}'")
        raw = rm.aliases or {}
        pairs = raw.items() if isinstance(raw, dict) else ((a.alias, a.version) for a in raw)
        by_version: dict[int, list[str]] = {}
        for alias, ver in pairs:
            by_version.setdefault(int(ver), []).append(alias)
        for v in sorted(vs, key=lambda v: int(v.version)):
            out.append({"name": n, "version": int(v.version), "aliases": sorted(by_version.get(int(v.version), [])),
                        "kind": v.tags.get("transferkit.kind", ""), "run_dir": v.tags.get("transferkit.run_dir", ""),
                        "parent": v.tags.get("transferkit.parent_version", ""),
                        "data": v.tags.get("transferkit.data_fingerprint", ""),
                        "created": v.creation_timestamp})
    return out


def _registered(client: Any, name: str, uri: str) -> Any:
    try:
        return client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        known = [m.name for m in client.search_registered_models()]
        from transferkit.errors import did_you_mean

        raise RegistryError(f"no registered model '{name}' in {uri}.{did_you_mean(name, known)} Registered: "
                            f"{', '.join(known) or 'none'} (`transferkit models list`).") from None


def _check_version(client: Any, name: str, version: int) -> None:
    try:
        client.get_model_version(name, str(version))
    except Exception:  # noqa: BLE001
        known = [int(v.version) for v in client.search_model_versions(f"name='{name}'")]
        raise RegistryError(f"model '{name}' has no version {version}"
                            + (f" (versions: {', '.join(map(str, sorted(known)))})" if known else
                               " (no versions: is the name right? `transferkit models list`)")) from None


def promote(uri: str, name: str, version: int, alias: str = "production") -> dict[str, Any]:
    """Point `alias` at `version`; for `production`, the version it pointed at before is kept in the history."""
    client = _client(uri)
    _registered(client, name, uri)
    _check_version(client, name, version)
    previous = None
    try:
        previous = int(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - no such alias yet
        pass
    client.set_registered_model_alias(name, alias, str(version))
    if alias == "production" and previous is not None and previous != version:
        hist = _history(client, name) + [previous]
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist))
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def _history(client: Any, name: str) -> list[int]:
    tags = client.get_registered_model(name).tags or {}
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def rollback(uri: str, name: str) -> dict[str, Any]:
    """Move `production` back to the version it pointed at before the last promotion."""
    client = _client(uri)
    _registered(client, name, uri)
    hist = _history(client, name)
    if not hist:
        raise RegistryError(f"model '{name}': nothing to roll back to (production was never moved from one "
                            "version to another; `transferkit models promote` sets it)")
    current = int(client.get_model_version_by_alias(name, "production").version)
    target = hist.pop()
    client.set_registered_model_alias(name, "production", str(target))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist))
    return {"name": name, "alias": "production", "version": target, "previous": current}


def is_reference(ref: str) -> bool:
    return str(ref).startswith("models:/")


def resolve(ref: str, uri: str | None = None) -> Path:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the run folder of that version."""
    body = str(ref)[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        version = None
    elif "/" in body:
        name, v = body.rsplit("/", 1)
        alias, version = None, v
    else:
        raise ConfigError([f"'{ref}': a registry reference is models:/NAME@ALIAS (e.g. models:/sentiment@production) "
                           "or models:/NAME/VERSION"])
    u = resolve_uri(uri)
    if u is None:
        raise RegistryError(f"'{ref}': the registry is off ({ENV}=off); give a run folder instead")
    client = _client(u)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except Exception:  # noqa: BLE001
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise RegistryError(f"'{ref}': model '{name}' has no {what} in {u} (`transferkit models list {name}`)") from None
    run_dir = Path(mv.tags.get("transferkit.run_dir") or Path(mv.source.replace("file://", "")).parent)
    if not (run_dir / "model").is_dir():
        raise RegistryError(f"'{ref}' is version {mv.version}, whose run folder {run_dir} is gone (moved or deleted)")
    return run_dir
