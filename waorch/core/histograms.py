"""Histograms kept in a Redis HASH: one count field per bucket (b:<le>), and the sum of values.

Writers add 1 to the field of the bucket a value falls in; GET /metrics turns the stored counts
into Prometheus's cumulative buckets. A prefix lets one HASH hold a histogram per label value.
"""

from __future__ import annotations


def bucket_field(seconds: float, buckets: tuple[float, ...], prefix: str = "") -> str:
    """The count field a value falls in: <prefix>b:<smallest bound ≥ it>, else <prefix>b:+Inf."""
    return prefix + next((f"b:{b:g}" for b in buckets if seconds <= b), "b:+Inf")


def cumulative(stored: dict[str, str], buckets: tuple[float, ...],
               prefix: str = "") -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last, from the per-bucket counts stored under `prefix`."""
    running, out = 0.0, []
    for bound in buckets:
        running += float(stored.get(f"{prefix}b:{bound:g}") or 0)
        out.append((f"{bound:g}", running))
    out.append(("+Inf", running + float(stored.get(f"{prefix}b:+Inf") or 0)))
    return out


def labelled(stored: dict[str, str]) -> list[str]:
    """The label values a prefixed HASH ("<label>|b:<le>", "<label>|sum") holds histograms for."""
    return sorted({field.rpartition("|")[0] for field in stored if "|" in field})
