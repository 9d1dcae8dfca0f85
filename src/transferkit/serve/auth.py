"""API keys with scopes, kept hashed (SHA-256) and compared in constant time; a key is never logged.

Keys file (YAML or JSON):

    keys:
      - name: web-frontend          # shown in logs instead of the key
        key: "tk_live_..."          # or  sha256: "<hex digest of the key>"  (then the file holds no secret)
        scopes: [predict]           # predict: /v1/predict and /v1/model; admin: also /v1/admin/*;
                                    # ingest: POST /v1/ingest of `transferkit monitor serve`

The environment variable TRANSFERKIT_API_KEYS adds keys as `name:scope+scope:key` entries separated by
commas, e.g. `ci:predict:abc123,ops:predict+admin:def456`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError

SCOPES = ("predict", "admin", "ingest")
ENV = "TRANSFERKIT_API_KEYS"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (32 bytes of entropy)."""
    return "tk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]


class KeyStore:
    def __init__(self, entries: list[tuple[str, str, frozenset[str]]]) -> None:
        #: (name, sha256 hex digest, scopes)
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def check(self, key: str | None) -> Principal | None:
        """The key's principal, or None. Every entry is compared (constant time each), so the time taken does
        not tell which entry, if any, came close."""
        if not key:
            return None
        d = digest(key).encode()
        found = None
        for name, h, scopes in self.entries:
            if hmac.compare_digest(d, h.encode()) and found is None:
                found = Principal(name, scopes)
        return found

    @classmethod
    def load(cls, path: Path | None, env: str | None = None) -> KeyStore:
        entries: list[tuple[str, str, frozenset[str]]] = []
        problems: list[str] = []
        if path is not None:
            entries += _from_file(path, problems)
        raw = os.environ.get(ENV, "") if env is None else env
        for n, item in enumerate(x for x in raw.split(",") if x.strip()):
            parts = item.strip().split(":", 2)
            if len(parts) != 3 or not parts[2]:
                problems.append(f"{ENV} entry {n + 1}: expected name:scope+scope:key")
                continue
            entries += _entry(parts[0], {"key": parts[2], "scopes": parts[1].split("+")}, f"{ENV} entry {n + 1}",
                              problems)
        if problems:
            raise ConfigError(problems, source=str(path) if path else ENV)
        return cls(entries)


def _from_file(path: Path, problems: list[str]) -> list[tuple[str, str, frozenset[str]]]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        problems.append(f"cannot read the API key file: {e.strerror or e}")
        return []
    except yaml.YAMLError as e:
        problems.append(f"not valid YAML/JSON: {e}")
        return []
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        problems.append("expected a top-level `keys:` list of {name, key or sha256, scopes}")
        return []
    out: list[tuple[str, str, frozenset[str]]] = []
    for i, k in enumerate(keys):
        where = f"keys[{i}]"
        if not isinstance(k, dict):
            problems.append(f"{where}: expected a mapping with name, key (or sha256) and scopes")
            continue
        out += _entry(k.get("name", f"key-{i + 1}"), k, where, problems)
    return out


def _entry(name: Any, k: dict[str, Any], where: str, problems: list[str]) -> list[tuple[str, str, frozenset[str]]]:
    scopes = k.get("scopes", ["predict"])
    if isinstance(scopes, str):
        scopes = [scopes]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        problems.append(f"{where}: unknown scope(s) {bad or scopes}; allowed: {', '.join(SCOPES)}")
        return []
    if "key" in k and "sha256" in k:
        problems.append(f"{where}: give key or sha256, not both")
        return []
    if "sha256" in k:
        h = str(k["sha256"]).lower()
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            problems.append(f"{where}: sha256 must be 64 hex digits (the SHA-256 of the key)")
            return []
    elif isinstance(k.get("key"), str) and len(k["key"]) >= 16:
        h = digest(k["key"])
    else:
        problems.append(f"{where}: key missing or shorter than 16 characters (make one with `transferkit keys new`)")
        return []
    return [(str(name), h, frozenset(scopes))]
