"""The per-seed figures `neighbours_confirm.md`'s rule needs beyond the two --summarize tables.

    PYTHONPATH=. python bench/results/zen3-2026-12-06/confirm_per_seed.py

Reads this folder's confirm_default_*.json, confirm_n10_*.json and confirm_suite.json (hold-out only):
seconds per epoch of each lockstep pair, and, per seed, the held-out group and its nine other than stripe.
"""

import json
import statistics as st
from pathlib import Path

from bench.holdout import mean_se
from bench.robustness import summary, variant_seed
from stages.corruptions import HELD_OUT

here = Path(__file__).parent
runs = {}
for f in here.glob("confirm_*_6*.json"):
    for r in json.loads(f.read_text())["runs"]:
        runs[r["variant"], r["seed"]] = r
seeds = sorted(s for v, s in runs if v == "default" and ("n10", s) in runs)
spe = {v: [runs[v, s]["train_s"] / runs[v, s]["epochs_run"] for s in seeds] for v in ("default", "n10")}
print("seed: scoring-half TTA %, epochs run, train s (s per epoch), default | n10 | n10's s/epoch ÷ default's")
for s, a, b in zip(seeds, spe["default"], spe["n10"], strict=True):
    d, n = runs["default", s], runs["n10", s]
    print(f"{s}: {d['tta_accuracy'] * 100:.2f}, {d['epochs_run']}, {d['train_s']:.0f} ({a:.1f}) | "
          f"{n['tta_accuracy'] * 100:.2f}, {n['epochs_run']}, {n['train_s']:.0f} ({b:.1f}) | {b / a:.3f}")
md, mn = st.median(spe["default"]), st.median(spe["n10"])
print(f"seconds per epoch, median: default {md:.2f}, n10 {mn:.2f}, ratio {mn / md:.3f}")
td, tn = (sum(runs[v, s]["train_s"] for s in seeds) for v in ("default", "n10"))
print(f"train seconds summed: default {td:.0f}, n10 {tn:.0f}, ratio {tn / td:.3f}")

suite = {}
for r in json.loads((here / "confirm_suite.json").read_text())["runs"]:
    suite[variant_seed(r["model"])] = r["accuracy"]
nine = [c for c in HELD_OUT if c != "stripe"]
d_held, d_nine = [], []
print("seed: held-out group %, default -> n10; the nine other than stripe, n10 minus default (points)")
for s in seeds:
    a, b = suite["default", s], suite["n10", s]
    held_a, held_b = (100 * summary(x)["held_out"] for x in (a, b))
    d_held.append(held_b - held_a)
    d_nine.append(100 * (st.fmean(b[c] for c in nine) - st.fmean(a[c] for c in nine)))
    print(f"{s}: {held_a:.2f} -> {held_b:.2f}; nine {d_nine[-1]:+.2f}")
for name, d in (("held-out group", d_held), ("nine other than stripe", d_nine)):
    m, se = mean_se(d)
    print(f"{name}: {m:+.2f} ± {se:.2f} points, {sum(x > 0 for x in d)} of {len(d)} seeds up")
