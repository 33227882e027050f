#!/usr/bin/env python3
"""Draws throughput and p99 latency against key-space size, for Keyper and etcd, as an SVG.

    scripts/plot-scaling.py RESULTS/scaling.tsv [MORE.tsv ...] -o docs/scaling.svg

Input: the scaling.tsv files scripts/bench-compare.sh writes (columns keys, system, workload,
rps, p50_us, p99_us, runs); several files are merged (a later file's row wins for the same
key space, system and workload), so a 10M-key Keyper-only run can be added to a comparison.
Output: one SVG with two panels per workload (writes, linearizable reads): req/s, and p99 in
ms, each against the key count on a log scale. Only the standard library is used.
"""
import argparse
import csv
import math
import sys

SYSTEMS = [("keyper", "Keyper", "#1f6feb"), ("etcd-v2", "etcd v2 API", "#d4a72c"), ("etcd-v3", "etcd v3 gateway", "#cf222e")]
WORKLOADS = [("write", "writes, 64 connections"), ("read", "linearizable reads, 64 connections")]
METRICS = [("rps", "requests/s", 1.0), ("p99_us", "p99 latency (ms)", 1e-3)]
W, H = 420, 260            # one panel
ML, MR, MT, MB = 64, 16, 34, 44


def load(paths):
    data = {}
    for path in paths:
        with open(path) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                data[(int(row["keys"]), row["system"], row["workload"])] = row
    return data


def nice_max(value):
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def label_keys(k):
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if k >= size and k % size == 0:
            return "%d%s" % (k // size, unit)
    return str(k)


def panel(out, x0, y0, data, workload, metric):
    key, title, scale = metric
    keys = sorted({k for (k, s, w) in data if w == workload})
    if not keys:
        return
    values = [float(data[(k, s, workload)][key]) * scale for k in keys for s, _, _ in SYSTEMS if (k, s, workload) in data]
    top = nice_max(max(values) * 1.05)
    lo, hi = math.log10(min(keys)), math.log10(max(keys))
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    pw, ph = W - ML - MR, H - MT - MB

    def px(k):
        return x0 + ML + (math.log10(k) - lo) / (hi - lo) * pw

    def py(v):
        return y0 + MT + ph - v / top * ph

    out.append('<text x="%.1f" y="%.1f" font-size="13" font-weight="bold">%s: %s</text>' % (x0 + ML, y0 + 20, workload_title(workload), title))
    for i in range(5):
        v = top * i / 4
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>' % (x0 + ML, py(v), x0 + ML + pw, py(v)))
        out.append('<text x="%.1f" y="%.1f" font-size="10" text-anchor="end">%s</text>' % (x0 + ML - 4, py(v) + 3, ("%g" % round(v, 2))))
    for k in keys:
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>' % (px(k), y0 + MT, px(k), y0 + MT + ph))
        out.append('<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>' % (px(k), y0 + MT + ph + 14, label_keys(k)))
    out.append('<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">keys (log scale)</text>' % (x0 + ML + pw / 2, y0 + MT + ph + 30))
    out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>' % (x0 + ML, y0 + MT, pw, ph))
    for system, _, color in SYSTEMS:
        points = [(px(k), py(float(data[(k, system, workload)][key]) * scale)) for k in keys if (k, system, workload) in data]
        if not points:
            continue
        if len(points) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, " ".join("%.1f,%.1f" % p for p in points)))
        for x, y in points:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (x, y, color))


def workload_title(workload):
    return dict(WORKLOADS)[workload]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="scaling.tsv files")
    parser.add_argument("-o", "--output", required=True, help="the SVG to write")
    parser.add_argument("--title", default="Keyper and etcd against key-space size (3 nodes each, one 2-core machine)")
    args = parser.parse_args()
    data = load(args.inputs)
    workloads = [w for w, _ in WORKLOADS if any(k[2] == w for k in data)]
    if not workloads:
        sys.exit("no write or read rows in %s" % ", ".join(args.inputs))
    width, height = W * len(METRICS), H * len(workloads) + 60
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="12" y="22" font-size="14" font-weight="bold">%s</text>' % args.title]
    for row, workload in enumerate(workloads):
        for col, metric in enumerate(METRICS):
            panel(out, col * W, 30 + row * H, data, workload, metric)
    x = 12
    for _, name, color in SYSTEMS:
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (x, height - 22, color))
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (x + 16, height - 12, name))
        x += 150
    out.append("</svg>")
    with open(args.output, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
