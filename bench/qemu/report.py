#!/usr/bin/env python3
"""Turns the QEMU benchmark's runs into tables, CSV, JSON and an SVG plot (python3 stdlib only).

usage: report.py RUNS MACHINE OUTDIR SVG [HOST_JSON]

RUNS has one line per boot: `rep=N exit=N secs=N` then the fields of its RESULT line.
"""

import csv
import json
import math
import statistics
import sys
from collections import defaultdict

MODES = ("parallel", "locked")


def parse_runs(path):
    rows = []
    with open(path) as f:
        for line in f:
            row = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    row[k] = v
            if row:
                rows.append(row)
    return rows


def num(row, key):
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return None


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def cell_text(s, scale=1.0, digits=0):
    if s is None:
        return "-"
    return f"{fmt(s['median'] * scale, digits)} ({fmt(s['min'] * scale, digits)}..{fmt(s['max'] * scale, digits)})"


def main():
    runs_path, machine_path, outdir, svg_path = sys.argv[1:5]
    host_json = sys.argv[5] if len(sys.argv) > 5 else None
    rows = parse_runs(runs_path)
    machine = {}
    with open(machine_path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                machine[k] = v

    # CSV: one row per run, the union of all fields.
    keys = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(f"{outdir}/qemu.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)

    groups = defaultdict(list)
    failed = []
    for r in rows:
        key = (r.get("workload"), r.get("backing"), r.get("mode"), int(r.get("vcpus", "0") or 0))
        if r.get("status") != "pass" or r.get("exit") != "0":
            failed.append(r)
            continue
        groups[key].append(r)

    metrics = ("pages_per_s", "fault_ns_median", "fault_ns_p99", "ns_per_page", "cost_ratio",
               "ceiling_frac", "wall_ns", "null_ns_1", "null_ns_all", "null_rate_all", "zero_ns",
               "faults", "retries", "bbm", "splits", "prunes", "relaxes", "tables_retired",
               "tlbi", "tlbi_ipa", "tlbi_range", "tlbi_vmid", "tlbi_local", "tlbi_elided",
               "create_ns", "update_ns", "adjust_ns", "secs", "fault_ns_mean", "step_zero_ns",
               "step_map_ns")
    cells = {}
    for key, rs in sorted(groups.items()):
        cells[key] = {m: summary([num(r, m) for r in rs]) for m in metrics}
    workloads = sorted({k[0] for k in cells}, key=["demand", "overlap", "pagetable", "random"].index)
    backings = sorted({k[1] for k in cells})
    vcpus = sorted({k[3] for k in cells})

    lines = []
    p = lines.append
    p("## QEMU benchmark: results")
    p("")
    p(f"Machine: {machine.get('nproc')} host CPUs ({machine.get('cpu')}), {machine.get('qemu')}, "
      f"{machine.get('rustc')}, commit {machine.get('commit')}, {machine.get('date')}.")
    p("")
    p(f"Each boot: `{machine.get('run_cmd')}`, i.e. `{machine.get('qemu_cmd')}`.")
    p("")
    reps = max((s['pages_per_s']['n'] for s in cells.values() if s['pages_per_s']), default=0)
    p(f"Medians of {reps} runs (min..max). pages/s = pages touched in the timed phases / the "
      "slowest vCPU's time from the start barrier; hyp fault = median hypervisor time per "
      "stage-2 fault (trap entry to ERET, lock wait included). Ratio = parallel / locked.")
    p("")
    for metric, title, scale, digits, ratio_inv in (
        ("pages_per_s", "Throughput, pages/s", 1.0, 0, False),
        ("fault_ns_median", "Hypervisor time per fault, median, µs", 0.001, 2, True),
    ):
        p(f"### {title}")
        p("")
        p("| workload | backing | vCPUs | parallel | locked | parallel/locked |")
        p("|---|---|---|---|---|---|")
        for wl in workloads:
            for b in backings:
                for v in vcpus:
                    par = cells.get((wl, b, "parallel", v), {}).get(metric)
                    loc = cells.get((wl, b, "locked", v), {}).get(metric)
                    ratio = "-"
                    if par and loc and par["median"] and loc["median"]:
                        ratio = f"{par['median'] / loc['median']:.2f}"
                    p(f"| {wl} | {b} | {v} | {cell_text(par, scale, digits)} | {cell_text(loc, scale, digits)} | {ratio} |")
        p("")

    p("### Calibration (same boots, medians)")
    p("")
    p("| vCPUs | null HVC alone, ns | null HVC, all vCPUs at once, ns each | all-vCPU null-trap ceiling, traps/s | page zero, ns |")
    p("|---|---|---|---|---|")
    for v in vcpus:
        rs = [r for k, g in groups.items() if k[3] == v for r in g]
        s = {m: summary([num(r, m) for r in rs]) for m in ("null_ns_1", "null_ns_all", "null_rate_all", "zero_ns")}
        p(f"| {v} | {cell_text(s['null_ns_1'])} | {cell_text(s['null_ns_all'])} | {cell_text(s['null_rate_all'])} | {cell_text(s['zero_ns'])} |")
    p("")

    # Goals of issue 6, computed from the cells.
    p("### Against the goals")
    p("")
    d1 = cells.get(("demand", "4k", "parallel", 1), {})
    if d1.get("pages_per_s"):
        p(f"- 1 vCPU, demand, 4k: {fmt(d1['pages_per_s']['median'])} pages/s (goal >= 350,000); "
          f"{fmt(d1['ns_per_page']['median'])} ns per fault end to end = "
          f"{d1['cost_ratio']['median']:.2f} x (null trap + page zero) (goal <= 1.8).")
        if d1.get("fault_ns_mean") and d1.get("step_zero_ns") and d1.get("step_map_ns"):
            h = d1["fault_ns_mean"]["median"]
            z = d1["step_zero_ns"]["median"]
            m = d1["step_map_ns"]["median"]
            p(f"  Where it goes (medians of the per-boot means): hypervisor handler {fmt(h)} ns = zeroing "
              f"{fmt(z)} ns + stage2 call {fmt(m)} ns + the rest {fmt(h - z - m)} ns; outside the handler "
              f"(exception entry/exit, context save/restore, re-execution) {fmt(d1['ns_per_page']['median'] - h)} ns.")
    for wl in workloads:
        for b in backings:
            one = cells.get((wl, b, "parallel", 1), {}).get("fault_ns_median")
            four = cells.get((wl, b, "parallel", 4), {}).get("fault_ns_median")
            if one and four and one["median"]:
                p(f"- parallel, {wl} {b}: hyp time per fault at 4 vCPUs / 1 vCPU = "
                  f"{four['median'] / one['median']:.2f} ({fmt(four['median'])} / {fmt(one['median'])} ns; goal <= 1.3).")
    for wl in ("overlap", "pagetable"):
        for b in backings:
            for v in (4, 8):
                par = cells.get((wl, b, "parallel", v), {}).get("pages_per_s")
                loc = cells.get((wl, b, "locked", v), {}).get("pages_per_s")
                if par and loc and loc["median"]:
                    p(f"- {wl} {b}, {v} vCPUs: parallel / locked throughput = {par['median'] / loc['median']:.2f} (goal >= 1.3).")
    p("")
    p("TLB invalidations (median per run, parallel mode, 4 vCPUs): ")
    p("")
    p("| workload | backing | faults | tlbi_elided | tlbi_ipa | tlbi_range | tlbi_vmid | tlbi_local | bbm | splits | prunes | relaxes | tables_retired |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for wl in workloads:
        for b in backings:
            c = cells.get((wl, b, "parallel", 4))
            if not c:
                continue
            vals = [c[m]["median"] if c[m] else None for m in ("faults", "tlbi_elided", "tlbi_ipa", "tlbi_range", "tlbi_vmid", "tlbi_local", "bbm", "splits", "prunes", "relaxes", "tables_retired")]
            p(f"| {wl} | {b} | " + " | ".join(fmt(x) for x in vals) + " |")
    p("")
    if failed:
        p(f"**{len(failed)} run(s) failed** and are left out of the medians:")
        for r in failed[:20]:
            p(f"- rep {r.get('rep')} {r.get('workload')} {r.get('backing')} {r.get('mode')} vcpus={r.get('vcpus')}: exit {r.get('exit')}, status={r.get('status')} {r.get('reason', '')}")
        p("")
    else:
        p("Every run passed (status=pass, checksums ok, leaked=0).")
        p("")
    host = None
    if host_json:
        try:
            with open(host_json) as f:
                host = json.load(f)
        except (OSError, ValueError) as e:
            p(f"Host benchmark: could not read {host_json}: {e}")
    total_secs = sum(num(r, "secs") or 0 for r in rows)
    p(f"{len(rows)} boots, {total_secs / 60:.1f} minutes of QEMU time.")

    report = "\n".join(lines) + "\n"
    with open(f"{outdir}/qemu-report.md", "w") as f:
        f.write(report)
    print(report)

    out = {
        "machine": machine,
        "cells": [
            {"workload": k[0], "backing": k[1], "mode": k[2], "vcpus": k[3], **{m: s for m, s in v.items() if s}}
            for k, v in cells.items()
        ],
        "failed": failed,
        "host": host,
    }
    with open(f"{outdir}/qemu.json", "w") as f:
        json.dump(out, f, indent=1)

    write_svg(svg_path, cells, workloads, backings, vcpus, machine)


COLORS = {("demand", "4k"): "#1f77b4", ("demand", "2m"): "#6baed6", ("overlap", "4k"): "#d62728",
          ("overlap", "2m"): "#fc8d59", ("pagetable", "4k"): "#2ca02c", ("pagetable", "2m"): "#98df8a",
          ("random", "4k"): "#9467bd", ("random", "2m"): "#c5b0d5"}


def write_svg(path, cells, workloads, backings, vcpus, machine):
    W, H = 1000, 540
    panels = (("pages_per_s", "pages/s (log)", 1.0), ("fault_ns_median", "hyp µs per fault, median (log)", 0.001))
    pw, ph = 400, 360
    ox = (70, 570)
    oy = 60
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">QEMU TCG: parallel (solid) vs locked '
         f'(dashed) stage-2 faults, medians</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">{machine.get("nproc")} host CPUs, '
         f'{machine.get("qemu", "")[:60]}, commit {machine.get("commit")}</text>']
    xs = {v: i for i, v in enumerate(vcpus)}
    for (metric, label, scale), x0 in zip(panels, ox):
        vals = [c[metric]["median"] * scale for c in cells.values() if c.get(metric) and c[metric]["median"] > 0]
        if not vals:
            continue
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        if hi <= lo:
            hi = lo * 10

        def X(v):
            return x0 + (xs[v] + 0.5) * pw / len(vcpus)

        def Y(val):
            return oy + ph - (math.log10(val) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

        s.append(f'<rect x="{x0}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
        d = lo
        while d <= hi * 1.0001:
            y = Y(d)
            s.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#ddd"/>')
            s.append(f'<text x="{x0 - 5}" y="{y + 4:.1f}" text-anchor="end">{d:g}</text>')
            d *= 10
        for v in vcpus:
            s.append(f'<text x="{X(v):.1f}" y="{oy + ph + 18}" text-anchor="middle">{v}</text>')
        s.append(f'<text x="{x0 + pw / 2}" y="{oy + ph + 36}" text-anchor="middle">vCPUs</text>')
        s.append(f'<text x="{x0 + pw / 2}" y="{oy - 6}" text-anchor="middle" font-weight="bold">{label}</text>')
        for wl in workloads:
            for b in backings:
                for mode in MODES:
                    pts = []
                    for v in vcpus:
                        c = cells.get((wl, b, mode, v), {}).get(metric)
                        if c and c["median"] > 0:
                            pts.append((X(v), Y(c["median"] * scale)))
                    if not pts:
                        continue
                    color = COLORS.get((wl, b), "#000")
                    dash = ' stroke-dasharray="6,4"' if mode == "locked" else ""
                    s.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="'
                             + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
                    for x, y in pts:
                        s.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    # Legend.
    lx, ly = 70, oy + ph + 60
    i = 0
    for wl in workloads:
        for b in backings:
            color = COLORS.get((wl, b), "#000")
            x = lx + (i % 6) * 150
            y = ly + (i // 6) * 18
            s.append(f'<line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" stroke="{color}" stroke-width="3"/>')
            s.append(f'<text x="{x + 30}" y="{y + 4}">{wl} {b}</text>')
            i += 1
    s.append(f'<text x="{lx}" y="{ly + 40}" fill="#555">solid = parallel (lock-free), dashed = locked '
             '(one global lock); generated by bench/qemu/report.py</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


if __name__ == "__main__":
    main()
