"""The statistics of an audit: how good a batch's labels are, with intervals, and the threshold they imply.

Plain functions over plain values (numpy only), so each can be checked on synthetic data:

- `mask_iou(a, b)`: one object's prediction against its final mask (both empty: 1, the label is right).
- `wilson_interval(k, n)`: a 95% interval for a rate (fix rate, false positives, false negatives).
- `bootstrap_interval(sums, counts, seed=)`: a seeded percentile bootstrap of a mean over targets
  (mean IoU); vectorised over leading axes, so a simulation runs many audits in one call.
- `targets_needed(k, n, margin)`: how many audited targets the rate's interval needs to be ±margin.
- `summarise(outcomes)`: mean IoU, fix rate, false positives and negatives, each with its interval.
- `suggest_threshold(items, current)`: the object-score logit threshold with the fewest presence errors.
- `farthest(references, candidates)`: the candidate least like every reference (cosine distance).

An *outcome* is one object ID on one reviewed target (`Outcome`); a target's outcomes are a dict by ID.
A target *needed a fix* when any of its IDs has IoU below 1. Rates are per target (the unit drawn), so
their intervals are binomial; a per-ID rate has one outcome per target.

Usage:
    wilson_interval(3, 30)                                        # (0.0346, 0.2562)
    summarise([{1: Outcome(1.0, True, True, 0.9, 2.1)}, {1: Outcome(0.5, True, True, 0.7, 0.8)}])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RESAMPLES = 2000


@dataclass(frozen=True)
class Outcome:
    """One object ID on one reviewed target: the prediction against the final (reviewed) mask.

    iou: IoU of the predicted and final masks (1 when both are empty). predicted, final: present or not.
    score: the object score (sigmoid of `logit`); None, with logit, for an ID the target was not labeled for.
    never: predicted absent although its logit passed the threshold (an empty mask): no threshold makes it present.
    """

    iou: float
    predicted: bool
    final: bool
    score: float | None = None
    logit: float | None = None
    never: bool = False

    @property
    def fixed(self) -> bool:
        return self.iou < 1.0

    @property
    def false_positive(self) -> bool:
        return self.predicted and not self.final

    @property
    def false_negative(self) -> bool:
        return self.final and not self.predicted


def mask_iou(predicted: np.ndarray, final: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks; 1.0 when both are empty."""
    predicted, final = np.asarray(predicted, bool), np.asarray(final, bool)
    union = np.count_nonzero(predicted | final)
    return 1.0 if union == 0 else np.count_nonzero(predicted & final) / union


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate of k in n (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_half_width(k, n, z: float = Z95):
    """Half the Wilson interval's width (numpy arrays or numbers), clipping left aside."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    p = k / n
    return z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))


def targets_needed(k: int, n: int, margin: float, z: float = Z95, limit: int = 1_000_000) -> int:
    """The fewest audited targets for which a rate's Wilson interval is ±margin or narrower, at the rate seen
    so far (k of n; 0.5, the widest, before any). Returns `limit` when even that is not enough."""
    p = 0.5 if n == 0 else k / n
    sizes = np.arange(1, limit + 1, dtype=float)
    ok = np.nonzero(wilson_half_width(p * sizes, sizes, z) <= margin)[0]
    return int(sizes[ok[0]]) if ok.size else limit


def bootstrap_interval(sums, counts, seed: int = 0, resamples: int = RESAMPLES, level: float = 0.95):
    """Percentile bootstrap interval of sum(sums) / sum(counts), resampling the last axis (the targets).

    sums, counts: (..., n) arrays, per target the sum of its values and how many there are (a target is
    resampled with all its objects). Returns (..., 2) [lo, hi]; NaN where n < 2. Seeded: the same call
    gives the same interval.
    """
    sums, counts = np.asarray(sums, float), np.asarray(counts, float)
    n = sums.shape[-1]
    if n < 2:
        return np.full(sums.shape[:-1] + (2,), np.nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = sums[..., idx].sum(-1) / np.maximum(counts[..., idx].sum(-1), 1e-300)  # (..., resamples)
    tail = (1 - level) / 2 * 100
    return np.moveaxis(np.percentile(means, [tail, 100 - tail], axis=-1), 0, -1)


def _rate(k: int, n: int) -> tuple[float | None, list[float] | None]:
    lo, hi = wilson_interval(k, n)
    return (k / n, [lo, hi]) if n else (None, None)


def summarise(outcomes: list[dict[int, Outcome]], obj_id: int | None = None, seed: int = 0,
              resamples: int = RESAMPLES, intervals: bool = True) -> dict:
    """Mean IoU, fix rate, false positives and negatives over reviewed targets (each a dict of outcomes by ID).

    obj_id: only that ID (targets without it are left out); None: every ID. The mean IoU is over every
    (target, ID) outcome, its interval a bootstrap over targets. The fix rate is the share of targets with
    an outcome below IoU 1; `false_positive_rate`/`false_negative_rate` the share of targets with one;
    `false_positives`/`false_negatives` count outcomes. intervals=False: no intervals (a biased sample).
    """
    rows = [[o for k, o in sorted(t.items()) if obj_id is None or k == obj_id] for t in outcomes]
    rows = [r for r in rows if r]
    n = len(rows)
    sums = np.array([sum(o.iou for o in r) for r in rows], float)
    counts = np.array([len(r) for r in rows], float)
    fixed = sum(any(o.fixed for o in r) for r in rows)
    fp_targets = sum(any(o.false_positive for o in r) for r in rows)
    fn_targets = sum(any(o.false_negative for o in r) for r in rows)
    out = {
        "targets": n, "objects": int(counts.sum()),
        "mean_iou": float(sums.sum() / counts.sum()) if n else None,
        "fix_rate": fixed / n if n else None, "fixed": fixed,
        "false_positives": sum(o.false_positive for r in rows for o in r),
        "false_negatives": sum(o.false_negative for r in rows for o in r),
        "false_positive_rate": fp_targets / n if n else None,
        "false_negative_rate": fn_targets / n if n else None,
    }
    if intervals:
        ci = bootstrap_interval(sums, counts, seed, resamples) if n else np.full(2, np.nan)
        out["mean_iou_ci"] = None if np.isnan(ci).any() else [float(ci[0]), float(ci[1])]
        out["fix_rate_ci"] = _rate(fixed, n)[1]
        out["false_positive_rate_ci"] = _rate(fp_targets, n)[1]
        out["false_negative_rate_ci"] = _rate(fn_targets, n)[1]
    return out


def presence_errors(items: list[Outcome], threshold: float) -> int:
    """Outcomes whose presence at `threshold` (logit above it, a mask to show) differs from the final one."""
    return sum(would_be_present(o, threshold) != o.final for o in items)


def would_be_present(o: Outcome, threshold: float) -> bool:
    """Whether the batch would have found the object at `threshold` (what it found, where no logit is known)."""
    if o.logit is None:
        return o.predicted
    return o.logit > threshold and not o.never


def suggest_threshold(items: list[Outcome], current: float) -> dict:
    """The logit threshold with the fewest presence errors on `items`, and what it changes.

    The errors are constant between consecutive distinct logits, so each such interval is tried once;
    among the intervals with the fewest errors the one nearest `current` is taken (`current` itself when
    it is among them: nothing changes for nothing), at its midpoint (1 beyond the lowest or highest logit
    for an open end) rounded to the fewest decimals that stay inside it. Returns {"suggested", "current",
    "presence_errors_now", "presence_errors_suggested", "changed": indices of items whose presence it
    flips, "scored": outcomes with a logit}.
    """
    logits = np.unique([o.logit for o in items if o.logit is not None and not o.never])
    now = presence_errors(items, current)
    if logits.size == 0:
        return {"suggested": current, "current": current, "presence_errors_now": now,
                "presence_errors_suggested": now, "changed": [], "scored": 0}
    # One threshold inside each interval (-inf, l0), [l0, l1), ..., [l_last, inf).
    candidates = np.concatenate([[logits[0] - 1.0], (logits[:-1] + logits[1:]) / 2, [logits[-1] + 1.0]])
    errors = np.array([presence_errors(items, t) for t in candidates])
    best = errors.min()
    if now <= best:
        suggested = current
    else:
        # The interval's distance from `current`: 0 inside it, else to its nearer end.
        lows = np.concatenate([[-np.inf], logits])
        highs = np.concatenate([logits, [np.inf]])
        distance = np.maximum(0.0, np.maximum(lows - current, current - highs))
        choice = np.nonzero(errors == best)[0]
        i = choice[np.argmin(distance[choice])]
        suggested = _short_inside(float(lows[i]), float(highs[i]), float(candidates[i]))
    changed = [i for i, o in enumerate(items) if would_be_present(o, suggested) != would_be_present(o, current)]
    return {"suggested": float(suggested), "current": current, "presence_errors_now": now,
            "presence_errors_suggested": presence_errors(items, suggested), "changed": changed,
            "scored": sum(o.logit is not None for o in items)}


def _short_inside(lo: float, hi: float, x: float) -> float:
    """`x` rounded to the fewest decimals that keep it in [lo, hi) (a threshold that reads well and, typed
    back as `--threshold`, makes the same decisions)."""
    for digits in range(0, 12):
        r = round(x, digits)
        if lo <= r < hi:
            return r
    return x


def farthest(references: np.ndarray, candidates: np.ndarray) -> tuple[int, np.ndarray]:
    """The candidate least like every reference: (its index, each candidate's cosine distance to its
    nearest reference). references: (R, C), candidates: (N, C) pooled features."""
    def unit(x):
        x = np.asarray(x, float)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    distance = (1.0 - unit(candidates) @ unit(references).T).min(axis=1)
    return int(np.argmax(distance)), distance
