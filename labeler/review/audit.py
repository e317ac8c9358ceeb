"""`python main.py quality`: what the audited reviews of an output folder say about the batch (quality.json).

The estimate uses the audits only (`Review.audit`: targets drawn at random from those not reviewed);
worst-first reviews are reported beside it, marked biased, and never enter it. From the manifest's
records (`review.quality` per target and object ID, written at review time; `audits`, the samples):

- per object ID and overall: mean IoU of prediction vs final (bootstrap 95% interval over targets, seeded),
  the share of targets that needed a fix, false positives and negatives (Wilson 95% intervals);
- the extrapolation to the unreviewed targets (the fix rate and its interval times their number);
- per ID and for all IDs together: the object-score logit threshold with the fewest presence errors on
  the audit, what it would have changed, and the command that reruns the batch with it;
- which corrected target to teach: the one whose pooled image-encoder features are farthest from every
  current reference's (the feature cache's entries; images it doesn't hold are encoded here);
- how many more audited targets the fix rate's interval needs to be ±margin.

Usage:
    report = quality_report("output", seed=0, margin=0.1, teach=False)
    write_quality("output", report)        # quality.json (and report.png's panel)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import UsageError
from ..outputs.folder import OutputFolder, sigmoid
from ..utils.files import atomic_write_text
from .quality import (
    RESAMPLES,
    Outcome,
    farthest,
    suggest_threshold,
    summarise,
    targets_needed,
    would_be_present,
)
from .session import Review

log = logging.getLogger("labeler")
MARGIN = 0.10  # the fix rate's interval the report asks for: ±10 percentage points
BIASED = ("worst-first reviews look at the targets most likely to be wrong, so their figures overstate the "
          "errors; they are not used in the estimate")


# ----- reading the records, strictly: a bad field is named --------------------------------------
def check_manifest(folder: OutputFolder) -> dict:
    """manifest.json as JSON, its audits and review records checked; UsageError naming the file and field."""
    path = folder.manifest_json
    if not path.is_file():
        raise UsageError(f"{path} does not exist: no labeled batch in {folder.root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} can't be read: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise UsageError(f"{path}: field 'targets' is missing or not an object")
    audits = data.get("audits", [])
    if not isinstance(audits, list):
        raise UsageError(f"{path}: field 'audits' is a {type(audits).__name__}, not a list")
    for i, audit in enumerate(audits):
        where = f"{path}: field 'audits[{i}]"
        if not isinstance(audit, dict):
            raise UsageError(f"{where}' is not an object")
        if not isinstance(audit.get("sample"), list) or not all(isinstance(n, str) for n in audit["sample"]):
            raise UsageError(f"{where}.sample' is missing or not a list of file names")
        if not isinstance(audit.get("seed"), int):
            raise UsageError(f"{where}.seed' is missing or not a whole number")
    for name, entry in data["targets"].items():
        review = entry.get("review") if isinstance(entry, dict) else None
        if review is None:
            continue
        where = f"{path}: field 'targets[{name!r}].review"
        if not isinstance(review, dict):
            raise UsageError(f"{where}' is not an object")
        quality = review.get("quality")
        if quality is None:
            continue
        if not isinstance(quality, dict):
            raise UsageError(f"{where}.quality' is not an object")
        for obj_id, o in quality.items():
            at = f"{where}.quality[{obj_id!r}]"
            if not str(obj_id).isdigit() or not isinstance(o, dict):
                raise UsageError(f"{at}' is not an object ID's record")
            iou = o.get("iou")
            if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 <= iou <= 1:
                raise UsageError(f"{at}.iou' is {iou!r}: expected a number from 0 to 1")
            for key in ("predicted", "final"):
                if not isinstance(o.get(key), bool):
                    raise UsageError(f"{at}.{key}' is {o.get(key)!r}: expected true or false")
            for key in ("score", "logit"):
                if o.get(key) is not None and (isinstance(o[key], bool) or not isinstance(o[key], (int, float))):
                    raise UsageError(f"{at}.{key}' is {o[key]!r}: expected a number or null")
    return data


def outcomes(review: dict) -> dict[int, Outcome]:
    """A review record's outcomes by object ID (empty for a review recorded before the quality field)."""
    threshold = review.get("threshold", defaults.THRESHOLD)
    out = {}
    for key, o in (review.get("quality") or {}).items():
        logit = o.get("logit")
        never = logit is not None and logit > threshold and not o["predicted"]
        out[int(key)] = Outcome(float(o["iou"]), o["predicted"], o["final"], o.get("score"), logit, never)
    return out


# ----- the report ------------------------------------------------------------------------------
def _percent(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:.1f}%"


def _interval(ci, fmt="{:.3f}") -> str:
    return "" if not ci else f" ({fmt.format(ci[0])}–{fmt.format(ci[1])})"


def rerun_command(review: Review, output, threshold: float) -> str:
    """The command that relabels the unreviewed targets with `threshold` (reviewed ones are kept)."""
    s = review.settings
    options = {k: s.get(k) for k in ("model", "checkpoint", "image_size", "device", "precision", "memory")}
    if s.get("formats"):
        options["formats"] = ",".join(s["formats"])
    text = "".join(f" --{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None)
    return f"python main.py --headless --output {output} --targets {review.targets_dir}{text} --threshold {threshold}"


def quality_report(output: str | os.PathLike, targets=None, seed: int = 0, margin: float = MARGIN,
                   resamples: int = RESAMPLES, teach: bool = True, cache=None, backend=None) -> dict:
    """The quality.json dict of `output` (see the module docstring). Raises UsageError when the folder holds
    no audit, or its manifest a bad field (named). teach=False: no teach suggestion (no model is built);
    cache: the feature cache's folder (None: the default one), False: none; backend: a model backend to use."""
    folder = OutputFolder(output)
    data = check_manifest(folder)
    review = Review(output, targets)
    records = review.records()
    audited_names = review.audited()
    if not data.get("audits"):
        raise UsageError(f"{folder.manifest_json}: field 'audits' is absent: no audit yet; run "
                         f"python main.py review --audit 30 --output {output}")
    audited, worst, excluded, untracked = [], [], 0, 0
    names = []
    for r in records:
        if not r.review:
            continue
        if r.review_state == "excluded":
            excluded += r.name in audited_names
            continue
        found = outcomes(r.review)
        if not found:
            untracked += 1  # reviewed before reviews recorded their quality
        elif r.name in audited_names:
            audited.append(found)
            names.append(r.name)
        else:
            worst.append(found)
    n = len(audited)
    ids = sorted({k for t in audited for k in t})
    unreviewed = [r for r in records if not r.review]
    report = {
        "audited": n, "excluded": excluded, "seed": seed, "resamples": resamples,
        "audits": [{"seed": a["seed"], "size": a.get("size", len(a["sample"])), "time": a.get("time"),
                    "reviewed": sum(1 for m in a["sample"] if m in names)} for a in data["audits"]],
        "overall": summarise(audited, None, seed, resamples),
        "ids": {str(k): {"class": review.prompts.classes.get(k, ""), **summarise(audited, k, seed, resamples)}
                for k in ids},
    }
    # The extrapolation: the audit's fix rate (and interval) times the unreviewed targets.
    overall = report["overall"]
    u = len(unreviewed)
    if n:
        lo, hi = overall["fix_rate_ci"]
        est = overall["fix_rate"] * u
        report["extrapolation"] = {
            "unreviewed": u, "need_fix": round(est), "need_fix_ci": [math.floor(lo * u), math.ceil(hi * u)],
            "text": f"about {round(est):,} ({math.floor(lo * u):,}–{math.ceil(hi * u):,}) of {u:,} unreviewed "
                    "targets would need a fix"}
    else:
        report["extrapolation"] = {"unreviewed": u, "need_fix": None, "need_fix_ci": None,
                                   "text": "no audited target reviewed yet"}
    audited_prints = {data["targets"][m].get("fingerprint") for m in names}
    report["labels_changed_since_audit"] = any(data["targets"][r.name].get("fingerprint") not in audited_prints
                                               for r in unreviewed) and n > 0
    # The threshold: presence errors against the object-score logit, per ID and for all IDs together.
    current = float(review.settings.get("threshold", defaults.THRESHOLD))
    report["threshold"] = {}
    pooled, where = [], []
    for k in ids:
        items = [(name, t[k]) for name, t in zip(names, audited) if k in t]
        pooled += [o for _, o in items]
        where += [(name, k) for name, _ in items]
        report["threshold"][str(k)] = _threshold_entry(suggest_threshold([o for _, o in items], current),
                                                       [(name, k) for name, _ in items], [o for _, o in items])
    total = _threshold_entry(suggest_threshold(pooled, current), where, pooled)
    total["command"] = rerun_command(review, output, total["suggested"]) if total["suggested"] != current else None
    report["threshold_all_ids"] = total
    # How many more audited targets the fix rate's interval needs.
    needed = targets_needed(overall["fixed"], n, margin)
    half = None if not n else (overall["fix_rate_ci"][1] - overall["fix_rate_ci"][0]) / 2
    more = max(0, needed - n)
    report["margin"] = {"margin": margin, "fix_rate_half_width": half, "audited_for_margin": needed, "more": more,
                        "command": f"python main.py review --audit {min(more, u)} --output {output}"
                        if more and u else None}
    report["worst_first"] = {
        "biased": True, "note": BIASED, "reviewed": len(worst),
        "overall": summarise(worst, None, intervals=False),
        "ids": {str(k): summarise(worst, k, intervals=False) for k in sorted({k for t in worst for k in t})}}
    report["reviewed_without_record"] = untracked
    report["teach"] = {"target": None, "why": "not asked (--no-teach)"}
    if teach:
        try:
            report["teach"] = teach_suggestion(review, backend, cache)
        except UsageError as e:  # e.g. the folder's checkpoint is gone: the figures still stand
            report["teach"] = {"target": None, "why": f"no model to compare the images with: {e}"}
    report["summary"] = describe(report, output)
    return report


def _threshold_entry(found: dict, where: list, items: list[Outcome]) -> dict:
    changed = [{"target": where[i][0], "id": where[i][1],
                "found_now": would_be_present(items[i], found["current"]),
                "found_suggested": would_be_present(items[i], found["suggested"]), "final": items[i].final}
               for i in found["changed"]]
    return {"suggested": found["suggested"], "suggested_score": sigmoid(found["suggested"]),
            "current": found["current"], "presence_errors_now": found["presence_errors_now"],
            "presence_errors_suggested": found["presence_errors_suggested"], "changes": changed,
            "scored": found["scored"]}


# ----- which corrected target to teach ------------------------------------------------------------
def pooled_features(backend, paths: list[Path], cache, encode_missing: bool = True) -> tuple[list, int, int]:
    """The image-encoder features of `paths`, each a (C,) array, the coarsest level's mean over the image: from
    the feature cache where it holds them, else encoded here (and stored), or None with `encode_missing` False.
    Returns (features, from cache, encoded)."""
    import torch

    from ..models.backend import encode
    from ..utils.hashing import content_hash
    from ..utils.images import read_rgb

    vectors, hits, encoded = [], 0, 0
    for path in paths:
        h = content_hash(path)
        entry = None
        if cache is not None and cache.enabled:
            batch = None if backend.device.type == "cpu" else 1
            entry = cache.load(cache.key(h, batch))
        if entry is not None:
            levels = entry["levels"]
            hits += 1
        elif not encode_missing:
            vectors.append(None)
            continue
        else:
            with torch.inference_mode():
                out = encode(backend, [read_rgb(path)], cache, [h])
            levels = backend.split_features(out)[0][0]
            encoded += 1
        vectors.append(levels[-1].float().mean(dim=(0, 2, 3)).cpu().numpy())
    return vectors, hits, encoded


def teach_suggestion(review: Review, backend=None, cache=None, encode_missing: bool = True) -> dict:
    """Among the corrected targets not taught yet, the one least like every current reference (its pooled
    image-encoder features farthest, by cosine distance, from the nearest reference's).

    backend: the model (None: built from the folder's settings). cache: the feature cache's folder (None:
    the default; False: off). encode_missing=False: only images the cache holds count (the review window)."""
    candidates = [r for r in review.records() if r.review_state == "corrected" and not r.review.get("taught")
                  and not r.review.get("teach")]
    if not candidates:
        return {"target": None, "why": "no corrected target left to teach"}
    references = [r.image for r in review.prompts.references if r.objects]
    if backend is None:
        from ..models.backend import ModelSettings, build_backend
        from ..models.common import resolve_device

        s = review.model_settings()
        backend = build_backend(ModelSettings(s["model"], s["checkpoint"], s["image_size"],
                                              resolve_device(s["device"]).type, s["precision"]))
    from ..batch.feature_cache import feature_cache_for

    features = feature_cache_for(cache, defaults.CACHE_SIZE_GB, backend)
    refs, h1, e1 = pooled_features(backend, references, features, encode_missing)
    cands, h2, e2 = pooled_features(backend, [r.path for r in candidates], features, encode_missing)
    references = [p for p, v in zip(references, refs) if v is not None]
    candidates = [r for r, v in zip(candidates, cands) if v is not None]
    if not references or not candidates:
        return {"target": None, "why": "the feature cache holds no features of the references or the corrected "
                                       "targets (python main.py quality encodes them)"}
    refs = np.stack([v for v in refs if v is not None])
    cands = np.stack([v for v in cands if v is not None])
    best, distance = farthest(refs, cands)
    nearest = np.argmin(1.0 - (cands[best] / np.linalg.norm(cands[best])) @
                        (refs / np.linalg.norm(refs, axis=1, keepdims=True)).T)
    order = np.argsort(-distance)
    return {"target": candidates[best].name, "distance": float(distance[best]),
            "nearest_reference": Path(references[nearest]).name,
            "candidates": [{"target": candidates[i].name, "distance": float(distance[i])} for i in order],
            "features": {"from_cache": h1 + h2, "encoded": e1 + e2, "cache": features is not None}}


# ----- text and files ------------------------------------------------------------------------------
def _line(name: str, s: dict) -> str:
    ci = s.get("fix_rate_ci")
    return (f"{name}: mean IoU {s['mean_iou']:.3f}{_interval(s.get('mean_iou_ci'))}; needed a fix "
            f"{s['fixed']}/{s['targets']} = {_percent(s['fix_rate'])}"
            f"{'' if not ci else f' ({_percent(ci[0])}–{_percent(ci[1])})'}; "
            f"{s['false_positives']} false positive(s), {s['false_negatives']} false negative(s)")


def describe(report: dict, output) -> list[str]:
    """The report as the lines `python main.py quality` prints (and report.png's panel shows)."""
    n = report["audited"]
    lines = [f"audit: {n} random target(s) reviewed"
             + (f", {report['excluded']} excluded (left out)" if report["excluded"] else "")
             + f"; intervals 95% (Wilson for rates, bootstrap over targets for IoU, seed {report['seed']})"]
    if n == 0:
        lines.append("no audited target reviewed yet: review the audit's targets (python main.py review "
                     f"--audit N --output {output})")
    else:
        lines.append(_line("overall", report["overall"]))
        for k, s in report["ids"].items():
            lines.append(_line(f"ID {k}" + (f" {s['class']}" if s["class"] else ""), s))
        lines.append(report["extrapolation"]["text"])
        if report["labels_changed_since_audit"]:
            lines.append("the unreviewed targets were labeled again since the audit (other prompts or settings): "
                         "these figures describe the earlier labels; audit again")
        for k, t in report["threshold"].items():
            lines.append(_threshold_line(f"ID {k}", t))
        total = report["threshold_all_ids"]
        lines.append(_threshold_line("all IDs (--threshold is one for all)", total))
        if total["command"]:
            lines.append("  rerun with it (cached features make it cheap; reviewed targets are kept): "
                         + total["command"])
    m = report["margin"]
    if m["more"]:
        width = "" if m["fix_rate_half_width"] is None else f"is ±{100 * m['fix_rate_half_width']:.1f} points; "
        u = report["extrapolation"]["unreviewed"]
        then = (f": {m['command']}" if m["more"] <= u else
                f", more than the {u} unreviewed" + (f" (auditing them all: {m['command']})" if u else ""))
        lines.append(f"too few audited targets: the fix rate's interval {width}for ±{100 * m['margin']:.0f} "
                     f"points audit about {m['more']} more{then}")
    if report["reviewed_without_record"]:
        lines.append(f"{report['reviewed_without_record']} target(s) reviewed before reviews recorded their quality: "
                     "left out")
    teach = report["teach"]
    if teach.get("target"):
        lines.append(f"teach: {teach['target']} (cosine distance {teach['distance']:.3f} to its nearest reference, "
                     f"{teach['nearest_reference']}): least like any reference; press T on it in the review window")
    else:
        lines.append(f"teach: no suggestion ({teach['why']})")
    w = report["worst_first"]
    if w["reviewed"]:
        s = w["overall"]
        lines.append(f"worst-first reviews (biased, not in the estimate): {w['reviewed']} reviewed, mean IoU "
                     f"{s['mean_iou']:.3f}, needed a fix {s['fixed']}/{s['targets']}, {s['false_positives']} false "
                     f"positive(s), {s['false_negatives']} false negative(s)")
    return lines


def _threshold_line(name: str, t: dict) -> str:
    if t["suggested"] == t["current"]:
        return (f"threshold {name}: keep {t['current']:g} ({t['presence_errors_now']} presence error(s) on the "
                f"audit; no threshold has fewer)")
    return (f"threshold {name}: {t['current']:g} -> {t['suggested']} (score {t['suggested_score']:.3f}): "
            f"presence errors on the audit {t['presence_errors_now']} -> {t['presence_errors_suggested']}, "
            f"{len(t['changes'])} object(s) change")


def write_quality(output: str | os.PathLike, report: dict, targets=None) -> Path:
    """quality.json, and report.png again with the quality panel under the sheet."""
    from ..outputs.report import write_report

    folder = OutputFolder(output)
    atomic_write_text(folder.quality_json, json.dumps(report, indent=1) + "\n")
    review = Review(output, targets)
    write_report(folder.root, review.targets, review.prompts.classes, review.prompts.object_ids)
    return folder.quality_json


def quality_command(argv: list[str], config: dict) -> int:
    """`python main.py quality [--output DIR]`: print the audit's figures and write quality.json."""
    p = argparse.ArgumentParser(prog="main.py quality", description="How good the batch's labels are, from a "
                                "random audit (python main.py review --audit N): mean IoU, fix rate, false "
                                "positives and negatives with 95% intervals, the threshold the audit supports, "
                                "the corrected target to teach. Writes OUTPUT/quality.json.")
    p.add_argument("--output", default=config.get("OUTPUT_DIR", "output"), help="output folder (default: %(default)s)")
    p.add_argument("--targets", help="target folder (default: the one the folder's manifest records)")
    p.add_argument("--margin", type=float, default=MARGIN, help="the fix rate's interval wanted, ± this (default: "
                   "%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: %(default)s)")
    p.add_argument("--no-teach", action="store_true", help="no teach suggestion (builds no model)")
    p.add_argument("--cache", default=config.get("CACHE"), metavar="DIR", help="feature cache folder (default: "
                   "the batch's default); images it lacks are encoded")
    args = p.parse_args(argv)
    try:
        if not 0 < args.margin < 0.5:
            raise UsageError(f"--margin {args.margin}: expected a number between 0 and 0.5")
        report = quality_report(args.output, args.targets, seed=args.seed, margin=args.margin,
                                teach=not args.no_teach, cache=args.cache)
        with OutputFolder(args.output).lock():  # no batch or review writes the folder meanwhile
            path = write_quality(args.output, report, args.targets)
    except UsageError as e:
        log.error("error: %s", e)
        return 2
    for line in report["summary"]:
        log.info("%s", line)
    log.info("wrote %s", path)
    return 0
