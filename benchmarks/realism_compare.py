"""Realism of the SIMULATED iUS against the REAL RESECT iUS (../shared/data): statistics and a discriminator.

    python -m benchmarks.realism_compare [--n-sim 6] [--shape 160] [--seed 100] [--json OUT.json]

Simulated cases (seeds from --seed, MNI152 and ReMIND-022 in turn, --shape^3 at 0.5 mm like the real volumes)
are rendered once with the learned renderer, which also returns the classic rendering of the same scene, so
"old" and "new" differ only in the brain tissue's appearance. Only the brain-tissue part of a simulated fan is
compared (us_labels == TISSUE): the real volumes are pre-resection, all tissue.

(a) per-statistic table: `simulation.compare_real.us_stats` of each volume; real mean +- 2 sd against the
    simulated mean, and how many simulated volumes fall inside the real mean +- 2 sd.
(b) discriminator: 16^3-voxel (8 mm) patches fully inside the tissue (up to 40 per volume), 24 texture statistics
    each (moments, percentiles, gradient energy, high-pass share, autocorrelation at 1, 2, 4 voxels along each
    axis, sorted), logistic regression on standardised statistics, 5-fold cross-validation split BY VOLUME
    (no volume in both train and test); the pooled held-out AUC and accuracy, for old vs real and new vs real.
    Also with gradient-boosted trees on the same statistics: the learned renderer's texture is fitted to the real
    volumes' mean of these statistics (simulation.fit_appearance.fit_speckle), so the non-linear classifier is
    the check that matching means did not just defeat a linear boundary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from simulation.fit_appearance import patch_features, patches  # noqa: F401  (the fit matches these statistics)

KEYS = ["mean", "p5", "p25", "p50", "p75", "p95", "p99", "snr", "acl_min_mm", "acl_max_mm"]


def discriminate(real: list, sim: list, folds=5, seed=0, model: str = "logistic") -> dict:
    """real, sim: lists (one per volume) of patch-feature lists. Held-out AUC/accuracy, folds split by volume.
    model: "logistic" (the target's classifier) or "boosting" (gradient-boosted trees: a non-linear check, since
    the learned renderer's texture is fitted to the real volumes' MEAN patch statistics, which a linear classifier
    leans on most)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y, g = [], [], []
    for label, group, off in ((0, real, 0), (1, sim, len(real))):
        for i, feats in enumerate(group):
            X += feats
            y += [label] * len(feats)
            g += [off + i] * len(feats)
    X, y, g = np.nan_to_num(np.array(X)), np.array(y), np.array(g)
    prob = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=folds).split(X, y, g):
        clf = (make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)) if model == "logistic"
               else HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed))
        clf.fit(X[tr], y[tr])
        prob[te] = clf.predict_proba(X[te])[:, 1]
    return dict(auc=float(roc_auc_score(y, prob)), accuracy=float(((prob > 0.5) == y).mean()),
                n_real=int((y == 0).sum()), n_sim=int((y == 1).sum()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-sim", type=int, default=6)
    ap.add_argument("--shape", type=int, default=160)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from simulation.cases import make_simulated_case
    from simulation.compare_real import _load_reals, us_stats
    from simulation.ultrasound import TISSUE
    rng = np.random.default_rng(0)
    reals = _load_reals()
    rows = {"real": [], "old": [], "new": []}
    pf = {"real": [], "old": [], "new": []}
    for name, vol, sp in reals:
        rows["real"].append(us_stats(vol, sp))
        pf["real"].append(patches(vol, vol > 0, rng))
    anats = ("mni152", "remind022")
    for i in range(args.n_sim):
        t = time.time()
        c = make_simulated_case(args.seed + i, anatomy=anats[i % 2], shape=(args.shape,) * 3, spacing=0.5,
                                renderer="learned")
        tissue = c["us_labels"] == TISSUE
        for key, vol in (("old", c["classic_fixed"]), ("new", c["fixed"])):
            v = np.where(tissue, vol, 0).astype(np.float32)
            rows[key].append(us_stats(v, c["spacing"]))
            pf[key].append(patches(v, tissue, rng))
        print(f"sim seed {args.seed + i} {anats[i % 2]}: tissue {tissue.mean():.2f} of the box, "
              f"{time.time() - t:.0f} s", file=sys.stderr, flush=True)
    table = {}
    print(f"\n(a) tissue part of the fan: real RESECT (n={len(reals)}) vs simulated (n={args.n_sim}), "
          f"shape {args.shape}^3 at 0.5 mm")
    print("| statistic | real mean ± 2 sd | old renderer: mean (inside ±2 sd) | new renderer: mean (inside ±2 sd) |")
    print("|---|---|---|---|")
    for k in KEYS:
        r = np.array([x[k] for x in rows["real"]], float)
        lo, hi = np.nanmean(r) - 2 * np.nanstd(r), np.nanmean(r) + 2 * np.nanstd(r)
        cells = []
        for key in ("old", "new"):
            s = np.array([x[k] for x in rows[key]], float)
            cells.append(f"{np.nanmean(s):.3g} ({int(((s >= lo) & (s <= hi)).sum())}/{len(s)})")
            table.setdefault(key, {})[k] = dict(mean=float(np.nanmean(s)), inside=int(((s >= lo) & (s <= hi)).sum()))
        table.setdefault("real", {})[k] = dict(mean=float(np.nanmean(r)), sd=float(np.nanstd(r)))
        print(f"| {k} | {np.nanmean(r):.3g} ± {2 * np.nanstd(r):.2g} | {cells[0]} | {cells[1]} |")
    print("\n(b) discriminator (24 patch statistics, 5 folds split by volume): held-out")
    disc = {}
    for model in ("logistic", "boosting"):
        for key in ("old", "new"):
            d = disc.setdefault(model, {})[key] = discriminate(pf["real"], pf[key], model=model)
            print(f"  {model}: {key} renderer vs real: AUC {d['auc']:.3f}, accuracy {d['accuracy']:.3f} "
                  f"({d['n_real']} real / {d['n_sim']} simulated patches)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(table=table, discriminator=disc, args=vars(args)), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
