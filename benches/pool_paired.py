#!/usr/bin/env python3
"""Pools the round tables of several `benches/compare.sh paired` runs.

    benches/pool_paired.py RUN.out [RUN.out ...]

Each argument is what one run printed. A run's ten rounds share their processes: the second
nginx once ran 1.20x the first across a whole run, so rounds are not independent draws and a
pooled interval over rounds is too narrow. This prints both views:

- rounds pooled: the median of every round's ratio, with its 95 % bootstrap interval;
- runs as the unit: each run's median, their mean, and its 95 % t interval.

Ratios are vastgate-bcrypt over the mean of the round's two nginx runs ("over both"), and the
control, the second nginx over the first. Tables printed before the mean of both became the
reference (their header says "nginx", not "nginx 1st") are converted with the control column.
Uses only the standard library.
"""

import random
import statistics
import sys

# Two-sided 95 % Student t quantiles by degrees of freedom.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
       10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 19: 2.09, 29: 2.05}


def rounds_of(path):
    """The rounds of one run's table, as dicts of ratios."""
    rounds, over_both = [], None
    with open(path, encoding="utf-8") as out:
        for line in out:
            if line.startswith("round "):
                over_both = "nginx 1st" in line
                continue
            cells = line.split()
            if over_both is None or len(cells) < 16 or not cells[0].isdigit() or "/" not in cells:
                continue
            slash = cells.index("/")
            a1, a50, a99 = (float(c) for c in cells[slash + 2:slash + 5])
            w1, p50, p99 = float(cells[4]), float(cells[8]), float(cells[10])
            if not over_both:
                # Over the first nginx: the mean of both is (1 + control) times half of it.
                w1, p50, p99 = w1 / ((1 + a1) / 2), p50 / ((1 + a50) / 2), p99 / ((1 + a99) / 2)
            rounds.append({"w1": w1, "p50": p50, "p99": p99, "w2": float(cells[6]),
                           "a1": a1, "a50": a50, "a99": a99})
    if not rounds:
        sys.exit(f"{path}: no round table of `compare.sh paired` found")
    return rounds


def bootstrap(values, draws=4000):
    """The 95 % interval of the median of `values`."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(draws * 0.025)], medians[int(draws * 0.975) - 1]


def main(paths):
    runs = [rounds_of(p) for p in paths]
    pooled = [r for run in runs for r in run]
    print(f"{len(runs)} run(s), {len(pooled)} rounds")
    print(f"{'':34} {'rounds pooled: median (95 %)':34} runs as the unit: mean (95 %) of the runs' medians")
    for key, what in (("w1", "W1 req/s over both nginx"), ("a1", "  control: nginx-again over nginx"),
                      ("p50", "W3 p50 over both nginx"), ("a50", "  control"),
                      ("p99", "W3 p99 over both nginx"), ("a99", "  control"),
                      ("w2", "W2 vastgate-bcrypt over vastgate")):
        values = [r[key] for r in pooled]
        lo, hi = bootstrap(values)
        medians = [statistics.median(r[key] for r in run) for run in runs]
        mean = statistics.mean(medians)
        if len(medians) > 1:
            df = len(medians) - 1
            t = T95.get(df) or T95[max(k for k in T95 if k <= df)]
            half = t * statistics.stdev(medians) / len(medians) ** 0.5
            by_run = f"{mean:.3f} ({mean - half:.3f}-{mean + half:.3f}) of " + " ".join(f"{m:.2f}" for m in medians)
        else:
            by_run = f"{mean:.3f} (one run)"
        pooled_text = f"{statistics.median(values):.3f} ({lo:.3f}-{hi:.3f})"
        print(f"{what:34} {pooled_text:34} {by_run}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
