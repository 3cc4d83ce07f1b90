#!/usr/bin/env python3
"""Turns the QEMU benchmark's runs into tables, CSV, JSON and a plot.

usage: report.py RUNS MACHINE OUTDIR PLOT [HOST_JSON]
       report.py --replot SOURCE PLOT [--reps N]

RUNS has one line per boot: `rep=N exit=N secs=S log=PATH` then the fields of its RESULT line.
MACHINE has `key=value` lines (nproc, cpu, qemu, rustc, commit, date, qemu_cmd, run_cmd,
matrix_secs). PLOT is written by matplotlib in the format its extension names (.svg, .png, .pdf).

--replot redraws a plot from what an earlier run left: its `qemu.json`, or a markdown report
with the tables `qemu-report.md` has ("### Throughput, pages/s" and "### Hypervisor time per
fault, median, µs", and a "Machine: ..." line), e.g. docs/performance.md; --reps N gives the
repetitions per cell a markdown report does not record.

Exit status: 0 when every boot passed; 1 when some failed (they are listed, and left out of the
medians); 1 with no plot written when every boot failed; 3 when matplotlib is missing.
"""

import csv
import json
import os
import re
import sys
from collections import defaultdict

from runs import num, parse_runs, read_machine, summary

MODES = ("parallel", "locked")
WORKLOAD_ORDER = ["demand", "overlap", "pagetable", "random"]


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


def duration(secs):
    return f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} minutes"


def spread(s):
    """`(min..max of N runs)`, or `(1 run)`."""
    if s["n"] == 1:
        return "(1 run)"
    return f"({fmt(s['min'])}..{fmt(s['max'])} over {s['n']} runs)"


def verdict(ok):
    return "met" if ok else "**not met**"


def run_name(r):
    return (f"rep {r.get('rep')} {r.get('workload', '?')} {r.get('backing', '?')} {r.get('mode', '?')} "
            f"vcpus={r.get('vcpus', '?')}")


def failure_text(r):
    why = f"exit {r.get('exit')}, status={r.get('status')}"
    if r.get("reason"):
        why += f" reason={r.get('reason')}"
    said = first_complaint(r.get("log"))
    if said:
        why += f": {said}"
    if r.get("log"):
        why += f" (log {r.get('log')})"
    return f"{run_name(r)}: {why}"


def first_complaint(log):
    """The first line of a boot's log that says what went wrong (the hypervisor's `error:` for a
    bad option, a `FAIL:` check, a panic, a timeout), or None."""
    if not log:
        return None
    try:
        with open(log, errors="replace") as f:
            for line in f:
                line = line.strip()
                if re.match(r"(error|FAIL|panic|run-qemu\.sh|timeout)\b", line, re.I):
                    return line[:200]
    except OSError:
        pass
    return None


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--replot":
        return replot(sys.argv[2:])
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    runs_path, machine_path, outdir, plot_path = sys.argv[1:5]
    host_json = sys.argv[5] if len(sys.argv) > 5 else None
    rows = parse_runs(runs_path)
    machine = read_machine(machine_path)

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
        if r.get("status") != "pass" or r.get("exit") != "0":
            failed.append(r)
            continue
        key = (r.get("workload"), r.get("backing"), r.get("mode"), int(r.get("vcpus", "0") or 0))
        groups[key].append(r)

    if not groups:
        # Nothing to report: also no stale report or JSON of an earlier run left looking current.
        for stale in ("qemu-report.md", "qemu.json"):
            try:
                os.remove(f"{outdir}/{stale}")
            except FileNotFoundError:
                pass
        print(f"bench/qemu: every one of the {len(rows)} boots failed; no report, no plot:", file=sys.stderr)
        for r in failed:
            print(f"  {failure_text(r)}", file=sys.stderr)
        return 1

    metrics = ("pages_per_s", "fault_ns_median", "fault_ns_p99", "ns_per_page", "cost_ratio",
               "ceiling_frac", "wall_ns", "null_ns_1", "null_ns_all", "null_rate_all", "zero_ns",
               "faults", "retries", "bbm", "splits", "prunes", "relaxes", "tables_retired",
               "tlbi", "tlbi_ipa", "tlbi_range", "tlbi_vmid", "tlbi_local", "tlbi_elided",
               "create_ns", "update_ns", "adjust_ns", "secs", "fault_ns_mean", "step_zero_ns",
               "step_map_ns")
    cells = {}
    for key, rs in sorted(groups.items()):
        cells[key] = {m: summary([num(r, m) for r in rs]) for m in metrics}
    workloads, backings, vcpus = axes(cells)

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
      "stage-2 fault (from after the vector code saved the guest's context to the end of the "
      "handler, before the restore; lock wait included; a histogram bucket's lower edge). "
      "Ratio = parallel / locked.")
    p("")
    for metric, title, scale, digits in (
        ("pages_per_s", "Throughput, pages/s", 1.0, 0),
        ("fault_ns_median", "Hypervisor time per fault, median, µs", 0.001, 2),
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

    host = None
    host_error = None
    if host_json:
        try:
            with open(host_json) as f:
                host = json.load(f)
        except (OSError, ValueError) as e:
            host_error = f"Host benchmark: could not read {host_json}: {e}"

    lines.extend(goals(cells, workloads, backings, host))
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
        p(f"**{len(failed)} of {len(rows)} run(s) failed** and are left out of the medians:")
        for r in failed:
            p(f"- {failure_text(r)}")
        p("")
    else:
        p("Every run passed (status=pass, checksums ok, leaked=0).")
        p("")
    if host_error:
        p(host_error)
        p("")
    total_secs = sum(num(r, "secs") or 0 for r in rows)
    took = f"{len(rows)} boots, {duration(total_secs)} of QEMU time"
    if machine.get("matrix_secs"):
        took += f"; the matrix took {duration(float(machine['matrix_secs']))} from the first boot to the last"
    p(took + ".")

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

    rc = plot(plot_path, cells, machine)
    if failed:
        print(f"bench/qemu: {len(failed)} of {len(rows)} boots failed (left out of the medians):", file=sys.stderr)
        for r in failed:
            print(f"  {failure_text(r)}", file=sys.stderr)
        return 1
    return rc


def axes(cells):
    workloads = sorted({k[0] for k in cells},
                       key=lambda w: WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else len(WORKLOAD_ORDER))
    backings = sorted({k[1] for k in cells}, key=lambda b: (b != "4k", b))
    vcpus = sorted({k[3] for k in cells})
    return workloads, backings, vcpus


def med(cells, key, metric):
    s = cells.get(key, {}).get(metric)
    return s["median"] if s else None


def block_zeroing(cells, key):
    """Whether the cell's median fault is a 2 MiB block being zeroed (>= 256 x the page zero time):
    its time is a memset, not the fault path, and comparing it says nothing about scaling."""
    f = med(cells, key, "fault_ns_median")
    z = med(cells, key, "zero_ns")
    if f is None:
        return False
    if z:
        return f >= 256 * z
    return key[1] == "2m" and f >= 50_000


def goals(cells, workloads, backings, host):
    """The goal checks (issues 6 and 12), each `met` or `not met`. A check whose cells are not in
    this run is not printed; nor is one that does not apply (see block_zeroing)."""
    out = ["### Against the goals", ""]
    p = out.append
    d1 = ("demand", "4k", "parallel", 1)
    c = cells.get(d1, {})
    if c.get("pages_per_s"):
        pps = c["pages_per_s"]
        p(f"- 1 vCPU, demand 4k, pages/s >= 350,000: {verdict(pps['median'] >= 350_000)}, "
          f"{fmt(pps['median'])} {spread(pps)}.")
    if c.get("cost_ratio") and c.get("ns_per_page"):
        cr = c["cost_ratio"]["median"]
        p(f"- 1 vCPU, demand 4k, time per fault end to end <= 1.8 x (null trap + page zero): {verdict(cr <= 1.8)}, "
          f"{cr:.2f} x ({fmt(c['ns_per_page']['median'])} ns per fault).")
        # The breakdown exists only in boots with steps=on (the step fields are 0 without).
        if c.get("fault_ns_mean") and all(c.get(k) and c[k]["median"] > 0 for k in ("step_zero_ns", "step_map_ns")):
            h = c["fault_ns_mean"]["median"]
            z = c["step_zero_ns"]["median"]
            m = c["step_map_ns"]["median"]
            p(f"  Where it goes (medians of the per-boot means): hypervisor handler {fmt(h)} ns = zeroing "
              f"{fmt(z)} ns + stage2 call {fmt(m)} ns + the rest {fmt(h - z - m)} ns; outside the handler "
              f"(exception entry/exit, context save/restore, re-execution) {fmt(c['ns_per_page']['median'] - h)} ns.")
    skipped = []
    for wl in workloads:
        for b in backings:
            k1, k4 = (wl, b, "parallel", 1), (wl, b, "parallel", 4)
            one, four = med(cells, k1, "fault_ns_median"), med(cells, k4, "fault_ns_median")
            if not one or four is None:
                continue
            if block_zeroing(cells, k1) or block_zeroing(cells, k4):
                skipped.append(f"{wl} {b}")
                continue
            r = four / one
            p(f"- parallel, {wl} {b}, hypervisor time per fault at 4 vCPUs <= 1.3 x 1 vCPU: {verdict(r <= 1.3)}, "
              f"{r:.2f} x ({fmt(four)} / {fmt(one)} ns).")
    for wl in ("overlap", "pagetable"):
        for b in backings:
            for v in (4, 8):
                par = med(cells, (wl, b, "parallel", v), "pages_per_s")
                loc = med(cells, (wl, b, "locked", v), "pages_per_s")
                if par is None or not loc:
                    continue
                r = par / loc
                p(f"- {wl} {b}, {v} vCPUs, parallel >= 1.3 x locked throughput: {verdict(r >= 1.3)}, {r:.2f} x "
                  f"({fmt(par)} / {fmt(loc)} pages/s).")
    for wl in ("demand", "overlap"):
        for b in backings:
            ks = [k for k in cells if k[0] == wl and k[1] == b]
            maxima = [cells[k][m]["max"] for k in ks for m in ("tlbi_ipa", "tlbi_range") if cells[k].get(m)]
            if not maxima:
                continue
            p(f"- {wl} {b}, demand faults issue no TLB invalidation (tlbi_ipa = tlbi_range = 0 in every boot): "
              f"{verdict(max(maxima) == 0)}, largest count {fmt(max(maxima))}.")
    if host:
        for k, v in sorted(host.get("ratios", {}).items()):
            m = re.fullmatch(r"(\w+)\.shared_over_locked\.(\d+)t\.disjoint", k)
            if m:
                p(f"- host benchmark, pool {m.group(1)}: shared >= 1.8 x locked at {m.group(2)} threads, disjoint: "
                  f"{verdict(v >= 1.8)}, {v:.2f} x.")
    if skipped:
        p(f"- (not checked: the 4-vCPU/1-vCPU fault time of {', '.join(skipped)}: there the median fault at one "
          "of the two counts zeroes a 2 MiB block, a memset rather than the fault path.)")
    return out


# --- the plot -------------------------------------------------------------------------------

MODE_STYLE = {"parallel": {"color": "#1f5fb4", "ls": "-", "marker": "o", "dx": -0.06},
              "locked": {"color": "#d9541a", "ls": "--", "marker": "s", "dx": 0.06}}
PANELS = (("pages_per_s", "pages/s", 1.0), ("fault_ns_median", "hyp µs per fault", 0.001))


def short_machine(machine):
    """The subtitle: each item whole, never cut mid-word."""
    qemu = machine.get("qemu", "")
    m = re.search(r"version (\S+)(?: \(([^)]*)\))?", qemu)
    if m:
        qemu = f"QEMU {m.group(1)}" + (f" ({m.group(2)})" if m.group(2) else "")
    rustc = re.sub(r"\s*\(.*\)", "", machine.get("rustc", ""))
    cpu = machine.get("cpu", "")
    items = [f"{machine.get('nproc', '?')} host CPUs" + (f" ({cpu})" if cpu else ""), qemu, rustc,
             f"commit {machine.get('commit', '?')}", machine.get("date", "")]
    return " · ".join(i for i in items if i)


def plot(path, cells, machine):
    """Small multiples: one row per workload, columns pages/s and hypervisor time per fault for
    each backing; in each, parallel and locked against vCPUs, the median as a line and the
    spread (min..max over the repetitions) as a band with error bars. Returns 0, or 3 when
    matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError as e:
        print(f"bench/qemu/report.py: cannot draw {path}: {e}. The plot needs matplotlib for this python3 "
              f"({sys.executable}): on Debian `apt-get install python3-matplotlib` (bench/qemu/run.sh does "
              "that when run as root), else `pip install matplotlib`. The tables and JSON are written.",
              file=sys.stderr)
        return 3
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "s2par", "font.size": 9,
                                "axes.titlesize": 9.5, "axes.labelsize": 9})
    workloads, backings, vcpus = axes(cells)
    cols = [(metric, label, scale, b) for metric, label, scale in PANELS for b in backings]
    ns = sorted({s["pages_per_s"]["n"] for s in cells.values() if s.get("pages_per_s")})
    n_all = ns[-1] if ns else 0
    fig, axs = plt.subplots(len(workloads), len(cols), figsize=(3.0 * len(cols) + 0.6, 2.35 * len(workloads) + 1.5),
                            squeeze=False)
    xs = {v: i for i, v in enumerate(vcpus)}

    def human(y, _pos):
        if y >= 1e6:
            return f"{y / 1e6:g}M"
        if y >= 1e3:
            return f"{y / 1e3:g}k"
        return f"{y:g}"

    for r, wl in enumerate(workloads):
        for c, (metric, label, scale, b) in enumerate(cols):
            ax = axs[r][c]
            drawn = False
            for mode in MODES:
                st = MODE_STYLE[mode]
                pts = []
                for v in vcpus:
                    s = cells.get((wl, b, mode, v), {}).get(metric)
                    if s and s["median"] > 0:
                        pts.append((xs[v] + st["dx"], s["median"] * scale, max(s["min"], 1e-9) * scale,
                                    s["max"] * scale, s["n"]))
                if not pts:
                    continue
                drawn = True
                x = [q[0] for q in pts]
                y = [q[1] for q in pts]
                lo = [q[2] for q in pts]
                hi = [q[3] for q in pts]
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.13, linewidth=0)
                ax.errorbar(x, y, yerr=[[a - b_ for a, b_ in zip(y, lo)], [b_ - a for a, b_ in zip(y, hi)]],
                            color=st["color"], ls=st["ls"], marker=st["marker"], ms=4, lw=1.6, capsize=3,
                            elinewidth=1, label=mode)
                for q in pts:
                    if q[4] != n_all:
                        # Left of points in the right half, so the label stays inside the panel.
                        right = q[0] > (len(vcpus) - 1) / 2
                        ax.annotate(f"n={q[4]}", (q[0], q[1]), textcoords="offset points",
                                    xytext=(-5 if right else 5, 4), ha="right" if right else "left",
                                    fontsize=7.5, color=st["color"],
                                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(human))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(range(len(vcpus)))
            ax.set_xticklabels([str(v) for v in vcpus])
            ax.set_xlim(-0.4, len(vcpus) - 0.6)
            ax.grid(True, which="major", color="#dddddd", lw=0.6)
            ax.set_title(f"{wl} {b} · {label}")
            if r == len(workloads) - 1:
                ax.set_xlabel("vCPUs")
            if not drawn:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888")
    handles, labels = [], []
    for ax in axs.flat:
        h, lab = ax.get_legend_handles_labels()
        if h:
            handles, labels = h, lab
            break
    labels = [{"parallel": "parallel (lock-free fault path)", "locked": "locked (one global MMU lock)"}.get(x, x)
              for x in labels]
    if n_all == 1:
        reps = "1 run per point (no spread to show)"
    elif len(ns) == 1:
        reps = f"median of {n_all} runs per point; bars and bands: min..max"
    else:
        reps = f"median of {n_all} runs per point (n= marks a point with fewer: failed runs); bars and bands: min..max"
    fig.suptitle("s2par under QEMU TCG: parallel vs locked stage-2 fault handling\n"
                 f"{reps}; log scales; hyp µs per fault = the median fault's hypervisor time\n"
                 f"{short_machine(machine)}", fontsize=10.5)
    height = fig.get_figheight()
    # Room for the three title lines above the panels and the legend below them.
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.3 / height), h_pad=1.2, w_pad=1.0)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    kw = {"metadata": {"Date": None}} if path.endswith(".svg") else {}
    fig.savefig(path, dpi=110, **kw)
    plt.close(fig)
    print(f"bench/qemu: wrote {path}", file=sys.stderr)
    return 0


# --- redrawing from an earlier run ----------------------------------------------------------

def cells_from_json(path):
    with open(path) as f:
        data = json.load(f)
    cells = {}
    for c in data["cells"]:
        cells[(c["workload"], c["backing"], c["mode"], int(c["vcpus"]))] = c
    return cells, data.get("machine", {})


def cells_from_markdown(path, reps):
    """The two result tables of a qemu-report.md (or docs/performance.md, which quotes them)."""
    tables = {"### Throughput, pages/s": ("pages_per_s", 1.0),
              "### Hypervisor time per fault, median, µs": ("fault_ns_median", 1000.0)}
    cells = defaultdict(dict)
    machine = {}
    current = None
    cell_re = re.compile(r"([\d,.]+) \(([\d,.]+)\.\.([\d,.]+)\)")
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                current = tables.get(line.strip())
                continue
            if line.startswith("Machine: ") and not machine:
                m = re.match(r"Machine: (\d+) host CPUs \(([^)]*)\), (QEMU emulator version [^,]*), (rustc [^,]*), "
                             r"commit (\w+\+?\w*), (\S+?)[,.]", line)
                if m:
                    machine = dict(zip(("nproc", "cpu", "qemu", "rustc", "commit", "date"), m.groups()))
            if current is None or not line.startswith("| ") or line.startswith("| workload"):
                continue
            parts = [x.strip() for x in line.strip("|").split("|")]
            if len(parts) < 5:
                continue
            metric, scale = current
            wl, b, v = parts[0], parts[1], int(parts[2])
            for mode, text in zip(MODES, parts[3:5]):
                m = cell_re.fullmatch(text)
                if not m:
                    continue
                med_, lo, hi = (float(x.replace(",", "")) * scale for x in m.groups())
                cells[(wl, b, mode, v)][metric] = {"median": med_, "min": lo, "max": hi, "n": reps}
    return dict(cells), machine


def replot(args):
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "--reps"):
        print(__doc__, file=sys.stderr)
        return 2
    source, path = args[0], args[1]
    reps = int(args[3]) if len(args) == 4 else 0
    if source.endswith(".json"):
        cells, machine = cells_from_json(source)
    else:
        if reps < 1:
            print("report.py --replot: a markdown source needs --reps N (it does not record them)", file=sys.stderr)
            return 2
        cells, machine = cells_from_markdown(source, reps)
    if not cells:
        print(f"report.py --replot: no result cells found in {source}", file=sys.stderr)
        return 1
    return plot(path, cells, machine)


if __name__ == "__main__":
    sys.exit(main())
