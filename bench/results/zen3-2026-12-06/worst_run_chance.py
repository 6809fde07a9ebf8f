"""How often the worst-run clause fails a candidate no different from the default, on this CPU's figures.

    python bench/results/zen3-2026-12-06/worst_run_chance.py

The rule's clause 1 asks that the candidate's worst run (scoring-half TTA accuracy) be no lower than the
default's worst over the same seeds; ties pass. If both sides' runs were draws from one distribution, the
chance that it fails is P(min of n candidate runs < min of n default runs). The distribution taken here is
that of the 29 default runs this Zen 3 trained at the recipe's code, split hold-out, seeds 50-59, 60-68 and
70-79, in images right of the 2,500 scored; the chance is computed exactly from it, for n = 8, 9 and 10.
Runs never fall below the lowest of the 29 there, so this is the low end: with no ties at all (a continuous
score) the chance is 1/2. Last, the chance that the lowest of 29 default and 10 candidate runs is a candidate's,
below every default run, if all 39 are draws from one distribution: at most 10 in 39.
"""

import json
from collections import Counter
from pathlib import Path

here = Path(__file__).parent
files = [*sorted((here.parent / "zen3-2026-12-05").glob("schedule_5*.json")),
         *sorted(here.glob("confirm_default_6*.json")), *sorted(here.glob("half_default_7*.json"))]
right = {r["seed"]: round(r["tta_accuracy"] * 2500)
         for f in files for r in json.loads(f.read_text())["runs"] if r["variant"] == "default"}
print(f"{len(right)} default runs (seeds {min(right)}-{max(right)}), images right of 2,500:",
      dict(sorted(Counter(right.values()).items())))
share = {k: c / len(right) for k, c in Counter(right.values()).items()}


def at_least(k: int, n: int) -> float:
    """P(min of n draws >= k)."""
    return sum(p for v, p in share.items() if v >= k) ** n


for n in (8, 9, 10):
    # P(default's min = k) * P(candidate's min < k), summed over k
    fail = sum((at_least(k, n) - at_least(k + 1, n)) * (1 - at_least(k, n)) for k in share)
    print(f"n = {n}: the clause fails a candidate no different from the default {100 * fail:.1f} % of the time")
print(f"the lowest of {len(right)} default and 10 candidate runs a candidate's, strictly: at most "
      f"{100 * 10 / (len(right) + 10):.0f} % if they are draws from one distribution")
