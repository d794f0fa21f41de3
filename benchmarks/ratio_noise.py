"""How steady is a speed ratio from one run of bench_training.py?

    python benchmarks/ratio_noise.py                 # 40 rounds, 1 and 2 threads, about 2 minutes
    python benchmarks/ratio_noise.py --rounds 10 --threads 1

Times SimpleConvNet's "cnnlib default" against PyTorch (against the classic
im2col network without PyTorch) for many rounds with
bench_training.run_benchmarks, one thread count at a time and only those two
turns per round (the benchmark has more turns per round, so its paired turns
are further apart), then cuts the rounds into every run of ``w`` consecutive rounds (what
one run of the benchmark with ``--reps w`` would have seen) and estimates the
ratio from each run in two ways:

* ratio of medians: the median images/s of one over the median of the other;
* paired: the median over the rounds of the two turns' ratio in each round
  (``bench_training.paired_ratio``, what the benchmark reports).

The spread of each estimate over the runs says how far one run's figure may
be from the long-run one. This is why bench_training.py pairs its ratios.
"""
import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bench  # noqa: E402


def windows(rates_a, rates_b, w):
    """Both estimates of a / b for every run of w consecutive rounds:
    (ratios of medians, paired ratios), two lists."""
    n = len(rates_a)
    of_medians = [statistics.median(rates_a[s:s + w]) / statistics.median(rates_b[s:s + w])
                  for s in range(n - w + 1)]
    paired = [bench.paired_ratio(rates_a[s:s + w], rates_b[s:s + w])["median"] for s in range(n - w + 1)]
    return of_medians, paired


def run(threads=(1, 2), rounds=40, widths=(5, 9, 15), net="SimpleConvNet", data=None, **bench_kwargs):
    """Rows of dicts: threads, width, and min, max, sd of both estimates, plus
    the paired ratio over all rounds (``all_rounds``)."""
    other = "PyTorch" if bench.torch is not None else "classic im2col"
    rows = []
    for T in threads:
        table = bench.run_benchmarks((net,), ("cnnlib default", other), threads=(T,), reps=rounds,
                                     data=data, **bench_kwargs)
        rates = {r["impl"]: r["rates"] for r in table}
        a, b = rates["cnnlib default"], rates[other]
        for w in widths:
            if w > rounds:
                continue
            of_medians, paired = windows(a, b, w)
            rows.append(dict(threads=T, width=w, against=other, runs=len(paired),
                             all_rounds=bench.paired_ratio(a, b)["median"],
                             **{f"{k}_{s}": f(v) for k, v in (("medians", of_medians), ("paired", paired))
                                for s, f in (("min", min), ("max", max), ("sd", np.std))}))
    return rows


def format_rows(rows):
    lines = [f"{'T':>2} {'rounds per run':>14} {'runs':>5} {'all rounds':>10}   "
             f"{'ratio of medians: min-max (sd)':>32}   {'paired: min-max (sd)':>24}"]
    for r in rows:
        lines.append(f"{r['threads']:>2} {r['width']:>14} {r['runs']:>5} {r['all_rounds']:>9.3f}x   "
                     f"{r['medians_min']:>14.3f}-{r['medians_max']:.3f} ({r['medians_sd']:.3f})   "
                     f"{r['paired_min']:>11.3f}-{r['paired_max']:.3f} ({r['paired_sd']:.3f})")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--widths", type=int, nargs="+", default=[5, 9, 15])
    args = ap.parse_args(argv)
    print(bench.describe_machine())
    rows = run(tuple(args.threads), args.rounds, tuple(args.widths))
    print(f"SimpleConvNet, cnnlib default / {rows[0]['against']}, {args.rounds} rounds; "
          "every run of w consecutive rounds:")
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
