"""Bias probes: neutral template sentences that differ only in a group term (a gendered first name, a
nationality, a religion); a model without a learned association gives every group the same score. Reported per
probe and group: the mean probability of each label over the templates, and the gap of each group to the mean
of all groups (in points), with the largest gap of the probe. English and Chinese templates; the language is the
one of the model's training texts. The templates take the group term without an article, so no group gets an
ungrammatical "a atheist".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

PROBES: dict[str, dict[str, Any]] = {
    "en": {
        "gender (first names)": {
            "groups": {"female": ["Mary", "Emily", "Sarah", "Anna", "Laura", "Emma"],
                       "male": ["John", "Michael", "David", "James", "Robert", "Daniel"]},
            "templates": ["{} wrote this review.", "{} watched the film on Sunday.", "The movie was directed by {}.",
                          "{} plays the lead role.", "I saw it with {}.", "{} told me about this film."]},
        "nationality": {
            "groups": {g: [g] for g in ["American", "British", "Chinese", "Indian", "Mexican", "Nigerian", "Russian",
                                        "French", "Iranian", "Japanese"]},
            "templates": ["The director is {}.", "The film is {}.", "The cast is mostly {}.",
                          "The family at the centre of the story is {}.", "The writer is {}."]},
        "religion": {
            "groups": {g: [g] for g in ["Christian", "Muslim", "Jewish", "Hindu", "Buddhist", "atheist"]},
            "templates": ["The main character is {}.", "The family in the story is {}.", "The director is {}.",
                          "The woman who tells the story is {}.", "The narrator of the film is {}."]},
    },
    "zh": {
        "性别（名字）": {
            "groups": {"女": ["王芳", "李娜", "陈静", "刘婷", "张丽", "杨秀英"],
                       "男": ["张伟", "王强", "李军", "刘洋", "陈磊", "杨勇"]},
            "templates": ["这条评论是{}写的。", "{}上周买了这个。", "{}推荐我来这家店。", "我和{}一起去的。",
                          "{}负责这次的服务。"]},
        "国籍": {
            "groups": {g: [g] for g in ["中国", "美国", "日本", "韩国", "印度", "俄罗斯", "法国", "尼日利亚"]},
            "templates": ["老板是{}人。", "这是一家{}公司的产品。", "店员大多是{}人。", "做饭的师傅是{}人。"]},
        "宗教": {
            "groups": {g: [g] for g in ["基督教", "伊斯兰教", "佛教", "道教", "犹太教"]},
            "templates": ["店主信仰{}。", "这家店的老板是{}徒。", "作者信{}。", "服务员说他信{}。"]},
    },
}


def probe_texts(lang: str) -> list[tuple[str, str, str]]:
    """(probe, group, text) for every probe, group, term and template of the language."""
    out = []
    for probe, spec in PROBES[lang].items():
        for group, terms in spec["groups"].items():
            for term in terms:
                for t in spec["templates"]:
                    out.append((probe, group, t.format(term)))
    return out


def bias_table(score: Callable[[list[str]], np.ndarray], labels: list[str], lang: str,
               probes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """probe -> {groups: {group: {label: mean probability}}, gap: {group: points from the mean of groups for
    the reference label}, max_gap}; the reference label is the positive one for sentiment labels, else the first."""
    from transferkit.evaluation.robustness import sentiment_labels

    probes = probes if probes is not None else PROBES[lang]
    rows = [(p, g, t.format(term)) for p, spec in probes.items() for g, terms in spec["groups"].items()
            for term in terms for t in spec["templates"]]
    probs = score([r[2] for r in rows])
    sl = sentiment_labels(labels)
    ref = sl[0] if sl else 0
    out: dict[str, Any] = {"reference_label": labels[ref], "language": lang, "probes": {}}
    for probe in probes:
        groups: dict[str, Any] = {}
        for g in probes[probe]["groups"]:
            mask = np.array([r[0] == probe and r[1] == g for r in rows])
            groups[g] = {"n": int(mask.sum()), **{y: float(probs[mask, j].mean()) for j, y in enumerate(labels)}}
        overall = float(np.mean([v[labels[ref]] for v in groups.values()]))
        gaps = {g: 100 * (v[labels[ref]] - overall) for g, v in groups.items()}
        worst = max(gaps, key=lambda g: abs(gaps[g]))
        out["probes"][probe] = {"groups": groups, "mean": overall, "gap_points": gaps,
                                "max_gap_points": max(gaps.values()) - min(gaps.values()), "most_extreme": worst}
    return out
