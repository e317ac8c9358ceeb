"""The audit's statistics on synthetic reviews (labeler/review/quality.py): exact figures, the intervals'
coverage in seeded simulations, the threshold against a brute-force search, the farthest candidate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeler.review.quality import (
    Outcome,
    bootstrap_interval,
    farthest,
    mask_iou,
    presence_errors,
    suggest_threshold,
    summarise,
    targets_needed,
    wilson_half_width,
    wilson_interval,
)


def test_mask_iou_counts_pixels_and_two_empty_masks_agree():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert mask_iou(a, b) == 1.0
    a[:, :4] = True   # 40 pixels
    b[:, 2:6] = True  # 40 pixels, 20 shared
    assert mask_iou(a, b) == 20 / 60
    assert mask_iou(a, np.zeros_like(a)) == 0.0


def test_wilson_interval_matches_the_formula_and_published_values():
    assert wilson_interval(2, 5) == pytest.approx((0.1176, 0.7693), abs=1e-4)  # Wilson (1927), as tabulated
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 30)
    assert (hi - lo) / 2 == pytest.approx(float(wilson_half_width(3, 30)))


def test_targets_needed_is_the_first_size_whose_interval_is_narrow_enough():
    n = targets_needed(3, 30, 0.10)
    assert wilson_half_width(0.1 * n, n) <= 0.10 < wilson_half_width(0.1 * (n - 1), n - 1)
    assert targets_needed(0, 0, 0.05) == targets_needed(50, 100, 0.05)  # before any audit: the widest case, p = 0.5
    assert 380 <= targets_needed(0, 0, 0.05) <= 390  # about 1.96^2 / (4 * 0.05^2) = 384


def o(iou, predicted=True, final=True, logit=2.0):
    return Outcome(iou, predicted, final, 1 / (1 + math.exp(-logit)), logit)


def test_synthetic_reviews_give_exactly_the_reported_figures():
    reviews = [
        {1: o(1.0), 2: o(1.0, False, False, -1.0)},     # accepted: both right (ID 2 rightly absent)
        {1: o(0.5), 2: o(1.0)},                          # ID 1 corrected to IoU 0.5
        {1: o(0.0, True, False), 2: o(0.8)},             # ID 1 a false positive, ID 2 redrawn
        {1: o(0.0, False, True, -0.5)},                  # ID 1 a false negative (no ID 2 on it)
        {1: o(1.0), 2: o(1.0)},
    ]
    s = summarise(reviews, seed=3)
    assert s["targets"] == 5 and s["objects"] == 9
    assert s["mean_iou"] == pytest.approx((1 + 1 + 0.5 + 1 + 0 + 0.8 + 0 + 1 + 1) / 9)
    assert (s["fixed"], s["fix_rate"]) == (3, 3 / 5)
    assert s["fix_rate_ci"] == pytest.approx(list(wilson_interval(3, 5)))
    assert (s["false_positives"], s["false_negatives"]) == (1, 1)
    assert s["false_positive_rate"] == s["false_negative_rate"] == 1 / 5
    assert s["false_negative_rate_ci"] == pytest.approx(list(wilson_interval(1, 5)))
    lo, hi = s["mean_iou_ci"]
    assert lo < s["mean_iou"] < hi and s == summarise(reviews, seed=3)  # seeded: the same figures again
    one = summarise(reviews, obj_id=2, seed=3)
    assert (one["targets"], one["mean_iou"], one["fixed"], one["false_positives"]) == (4, pytest.approx(0.95), 1, 0)
    # The bootstrap resamples whole targets: its interval is the percentiles of resampled ratios.
    sums, counts = np.array([2, 1.5, 0.8, 0, 2]), np.array([2, 2, 2, 1, 2])
    idx = np.random.default_rng(3).integers(0, 5, size=(2000, 5))
    expected = np.percentile(sums[idx].sum(1) / counts[idx].sum(1), [2.5, 97.5])
    assert s["mean_iou_ci"] == pytest.approx(list(expected))
    biased = summarise(reviews, intervals=False)
    assert "fix_rate_ci" not in biased and biased["fix_rate"] == 3 / 5


def test_the_intervals_cover_the_true_values_about_95_percent_of_the_time():
    """Many seeded audits of 30 targets from a population of known quality (vectorised)."""
    rng = np.random.default_rng(2026)
    # Wilson: 20,000 audits for each of three fix rates.
    for p in (0.1, 0.3, 0.5):
        k = rng.binomial(30, p, size=20_000)
        z = 1.959963984540054
        centre = (k / 30 + z * z / 60) / (1 + z * z / 30)
        half = wilson_half_width(k, 30)
        coverage = np.mean((centre - half <= p) & (p <= centre + half))
        assert 0.93 <= coverage <= 0.975, (p, coverage)
    # Bootstrap of the mean IoU: 600 audits of 30 targets with two objects each; half the objects need a fix
    # (IoU ~ Beta(4, 2), mean 2/3), the rest are right (IoU 1).
    audits, n = 600, 30
    fixed = rng.random((audits, n, 2)) < 0.5
    iou = np.where(fixed, rng.beta(4, 2, (audits, n, 2)), 1.0)
    true = 1 - 0.5 * (1 - 4 / 6)
    ci = bootstrap_interval(iou.sum(-1), np.full((audits, n), 2.0), seed=1, resamples=1000)
    coverage = np.mean((ci[:, 0] <= true) & (true <= ci[:, 1]))
    assert 0.92 <= coverage <= 0.975, coverage


def brute_force(items, current):
    """The fewest presence errors over a fine grid of thresholds (finer than the logits' 0.01 steps), and the
    grid point nearest `current` with them."""
    grid = np.concatenate([np.arange(-6, 6, 0.004), [current]])
    logits = np.array([o.logit for o in items])
    final = np.array([o.final for o in items])
    errors = ((logits[None, :] > grid[:, None]) != final[None, :]).sum(1)
    best = errors.min()
    winners = grid[errors == best]
    return best, winners[np.argmin(np.abs(winners - current))]


def check_against_brute_force(seed: int) -> bool:
    """One random audit's suggestion against the brute force; whether it moved the threshold."""
    rng = np.random.default_rng(seed)
    n = 25
    logits = np.round(rng.normal(0.5, 1.5, n), 2)
    final = rng.random(n) < 1 / (1 + np.exp(-2 * (logits - 0.8)))  # present more often at high logits
    current = 0.0
    items = [Outcome(1.0 if (lg > current) == f else 0.0, bool(lg > current), bool(f), None, float(lg))
             for lg, f in zip(logits, final)]
    found = suggest_threshold(items, current)
    best, nearest = brute_force(items, current)
    assert found["presence_errors_suggested"] == best == presence_errors(items, found["suggested"])
    assert found["presence_errors_now"] == presence_errors(items, current) == sum(o.predicted != o.final for o in items)
    # Short: the logits have two decimals, so a two-decimal threshold always lies in the chosen interval.
    assert round(found["suggested"], 2) == found["suggested"]
    # The same decisions as the nearest best grid point: no logit lies between them.
    assert [lg > found["suggested"] for lg in logits] == [lg > nearest for lg in logits]
    assert found["changed"] == [i for i, lg in enumerate(logits) if (lg > found["suggested"]) != (lg > current)]
    return found["suggested"] != current


def test_the_threshold_suggestion_equals_a_brute_force_search():
    moved = [check_against_brute_force(seed) for seed in range(8)]
    assert sum(moved) >= 3, moved  # most of these audits support another threshold: the check is not idle


def test_the_threshold_stays_when_nothing_is_better_and_empty_masks_never_appear():
    items = [o(1.0, True, True, 2.0), o(1.0, False, False, -2.0)]
    assert suggest_threshold(items, 0.0)["suggested"] == 0.0
    # Predicted absent above the threshold (an empty mask): lowering the threshold can't make it present.
    never = Outcome(0.0, False, True, 0.9, 2.2, never=True)
    found = suggest_threshold([never, o(0.0, True, False, 1.0)], 0.0)
    assert found["presence_errors_now"] == 2 and found["presence_errors_suggested"] == 1
    assert 1.0 < found["suggested"] and found["changed"] == [1]


def test_farthest_picks_the_candidate_least_like_every_reference():
    refs = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]])
    cands = np.array([[1.0, 0.05, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0]])
    best, distance = farthest(refs, cands)
    assert best == 1 and distance[1] == pytest.approx(1.0) and distance[0] < distance[2] < distance[1]
