#!/usr/bin/env python3
"""kl_paired — two quantizations' KL divergences compared on the same tokens.

  kl_paired.py --per-window N A.kl B.kl [--names A B] [--markdown LABEL]

A.kl and B.kl are `tern perplexity --kl-base BASE --kl-out FILE` outputs of
two models against the same base run: one KL per scored position, window
by window, N positions per window (n_ctx - 1 - n_ctx/2). Positions inside
a window are correlated (they share a context), so every standard error
here is taken over windows: the mean of each window's mean, ± the standard
deviation of the window means / sqrt(windows). The difference B - A is
paired (same tokens, window by window), so its error is far smaller than
either mean's. Prints mean_A ± se, mean_B ± se, B - A ± se and
z = (B - A) / se; with --markdown, one table row instead.
"""

import argparse
import math
import sys


def read(path):
    with open(path) as f:
        return [float(line) for line in f if line.strip()]


def window_means(v, n):
    if n <= 0 or len(v) % n:
        sys.exit(f"kl_paired: {len(v)} values do not fill windows of {n}")
    return [sum(v[i:i + n]) / n for i in range(0, len(v), n)]


def mean_se(m):
    c = len(m)
    mu = sum(m) / c
    if c < 2:
        return mu, 0.0
    var = sum((x - mu) ** 2 for x in m) / (c - 1)
    return mu, math.sqrt(var / c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-window", type=int, required=True)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    ap.add_argument("--markdown", metavar="LABEL")
    o = ap.parse_args()
    a, b = read(o.a), read(o.b)
    if len(a) != len(b):
        sys.exit(f"kl_paired: {o.a} has {len(a)} positions, {o.b} {len(b)}: not the same run")
    wa, wb = window_means(a, o.per_window), window_means(b, o.per_window)
    (ma, sa), (mb, sb) = mean_se(wa), mean_se(wb)
    md, sd = mean_se([y - x for x, y in zip(wa, wb)])
    z = md / sd if sd > 0 else 0.0
    if o.markdown:
        print(f"| {o.markdown} | {ma:.6f} ± {sa:.6f} | {mb:.6f} ± {sb:.6f} | {md:+.6f} ± {sd:.6f} "
              f"({100 * md / ma if ma else 0:+.1f} %) | {z:+.1f} |")
    else:
        print(f"{o.names[0]}: {ma:.6f} ± {sa:.6f}  {o.names[1]}: {mb:.6f} ± {sb:.6f}  "
              f"{o.names[1]} - {o.names[0]}: {md:+.6f} ± {sd:.6f}  z {z:+.2f}  ({len(wa)} windows)")


if __name__ == "__main__":
    main()
