"""Alert rules on window statistics: pure arithmetic, no database (tests check it on fixed numbers).

share_rise: in the window being judged, a label's share of the texts is `points` percentage points or more above
its trailing baseline, the mean share over the up to `baseline_windows` earlier windows that had at least
`min_count` texts (at least `min_baseline` of them needed). volume_spike: the window holds at least `min_count`
texts and `factor` times the mean count of the `baseline_windows` earlier windows.

De-duplication is the monitor's (engine.py): a condition that still holds in the next window extends the alert it
fired instead of firing again; it fires anew only after a window where it did not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferkit.apps.monitor.settings import Rule
from transferkit.apps.monitor.store import WindowStats


@dataclass(frozen=True)
class Finding:
    rule: Rule
    label: str | None
    value: float  # the share (0-1) or the count of the judged window
    baseline: float  # the baseline share or mean count
    used: int  # how many earlier windows formed the baseline
    count: int  # texts in the judged window

    @property
    def message(self) -> str:
        r = self.rule
        if r.kind == "share_rise":
            return (f"{r.model} '{self.label}' share {100 * self.value:.1f}% vs {100 * self.baseline:.1f}% baseline "
                    f"(+{100 * (self.value - self.baseline):.1f} pt, {self.count} texts; baseline of "
                    f"{self.used} earlier windows)")
        ratio = self.value / self.baseline if self.baseline else float("inf")
        return (f"volume {int(self.value)} texts vs {self.baseline:.1f} baseline mean ({ratio:.1f}x; "
                f"{self.used} earlier windows)")


def judge(rule: Rule, current: WindowStats, history: list[WindowStats], labels: dict[str, list[str]]) -> list[Finding]:
    """What `rule` finds in `current`, given the earlier windows `history` (oldest first; only the last
    `baseline_windows` are used) and each model's labels."""
    recent = history[-rule.baseline_windows:]
    if current.count < rule.min_count:
        return []
    if rule.kind == "volume_spike":
        if len(recent) < rule.min_baseline:
            return []
        base = sum(h.count for h in recent) / len(recent)
        if current.count >= rule.factor * base:
            return [Finding(rule, None, float(current.count), base, len(recent), current.count)]
        return []
    assert rule.model is not None and rule.label is not None
    watched = labels.get(rule.model, []) if rule.label == "*" else [rule.label]
    found = []
    for label in watched:
        base_shares = [h.share(rule.model, label) for h in recent if h.count >= rule.min_count]
        if len(base_shares) < rule.min_baseline:
            continue
        base = sum(base_shares) / len(base_shares)
        value = current.share(rule.model, label)
        if 100 * (value - base) >= rule.points - 1e-9:
            found.append(Finding(rule, label, value, base, len(base_shares), current.count))
    return found
