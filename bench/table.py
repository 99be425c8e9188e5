#!/usr/bin/env python3
"""Turns the JSON lines of bench/run.sh into a markdown table with ours/peer ratios (standard library only)."""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = defaultdict(dict)  # (workload, batch) -> impl label -> record
for r in rows:
    if "error" in r:
        continue
    label = r["impl"] if r["impl"] != "fgclip-rs" else f"ours-{r.get('dtype', 'f32')}"
    by[(r["workload"], r["batch"])][label] = r

print("| workload | batch | ours f32 | ours bf16 | PyTorch | ORT | f32/PyTorch | bf16/PyTorch | f32/ORT | bf16/ORT | GFLOP/s (bf16) | peak RSS MiB (ours f32 / torch) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
def v(d, k):
    return d[k]["items_per_s"] if k in d else None
def fmt(x):
    return "–" if x is None else f"{x:.2f}"
def ratio(a, b):
    return "–" if a is None or b is None else f"{a / b:.2f}×"
for (w, b), d in sorted(by.items()):
    o32, o16, pt, ort = v(d, "ours-f32"), v(d, "ours-bf16"), v(d, "torch"), v(d, "ort")
    gf = d.get("ours-bf16", {}).get("achieved_gflops")
    rss = f"{d['ours-f32']['peak_rss_mib']:.0f} / {d['torch']['peak_rss_mib']:.0f}" if "ours-f32" in d and "torch" in d else "–"
    print(f"| {w} | {b} | {fmt(o32)} | {fmt(o16)} | {fmt(pt)} | {fmt(ort)} | {ratio(o32, pt)} | {ratio(o16, pt)} | {ratio(o32, ort)} | {ratio(o16, ort)} | {fmt(gf)} | {rss} |")
threads = {r.get("threads") for r in rows}
print(f"\nthreads: {sorted(t for t in threads if t is not None)}; items/s = images/s or texts/s")
