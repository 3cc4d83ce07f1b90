#!/usr/bin/env python3
"""Turns bench/qemu/dirtylog.sh's boots into tables, JSON and a plot.

usage: dirtylog.py RUNS MACHINE OUTDIR PLOT

RUNS has one line per boot: `kind=dirtylog|aging rep=N exit=N secs=S log=PATH` then the fields
of its RESULT line. Per boot, a dirtylog figure is the median over its passes (dirty_pass_ns_i,
get_clear_ns_i, tlbi_i); an aging figure is the boot's own summary (age_ns_mean, the median of
final_age_ns_i, the sums of young_i and touched_i, fault_ns_p99). Each cell prints the median
over its boots and [min..max]. Exit status: 0 when every boot passed, 1 when some failed (listed,
left out of the medians), 3 when matplotlib is missing (the tables and JSON are written).
"""

import json
import statistics
import sys
from collections import defaultdict

from runs import num, parse_runs, read_machine, summary


def per_pass(row, prefix):
    vals = [num(row, f"{prefix}_{i}") for i in range(1, int(row.get("iters", "0")) + 1)]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def cell(s, scale=1.0, digits=1):
    if not s:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'] * scale)} [{f.format(s['min'] * scale)}..{f.format(s['max'] * scale)}]"


def med(s):
    return s["median"] if s else None


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


def main():
    runs_path, machine_path, outdir, plot_path = sys.argv[1:5]
    rows = parse_runs(runs_path)
    machine = read_machine(machine_path)
    failed = [r for r in rows if r.get("exit") != "0" or r.get("status") != "pass"]
    good = [r for r in rows if r not in failed]
    dl = defaultdict(lambda: defaultdict(list))
    ag = defaultdict(lambda: defaultdict(list))
    for r in good:
        v = int(r["vcpus"])
        if r["kind"] == "dirtylog":
            c = dl[(r["dirty"], r["mode"], v)]
            c["dirty_pass_ms"].append((per_pass(r, "dirty_pass_ns") or 0) / 1e6)
            c["get_clear_ms"].append((per_pass(r, "get_clear_ns") or 0) / 1e6)
            c["dirtied"].append(per_pass(r, "dirtied"))
            c["tlbi"].append(per_pass(r, "tlbi"))
            c["write_faults"].append(num(r, "write_faults"))
            c["populate_ms"].append((num(r, "populate_ns") or 0) / 1e6)
            c["lost"].append(num(r, "lost_dirty"))
        else:
            c = ag[(r["mode"], r["aging"], v)]
            iters = int(r.get("iters", "0"))
            c["age_ms"].append((num(r, "age_ns_mean") or 0) / 1e6 if r["aging"] == "on" else None)
            c["final_age_ms"].append((per_pass(r, "final_age_ns") or 0) / 1e6)
            c["agings"].append(num(r, "agings"))
            c["young"].append(sum(num(r, f"young_{i}") or 0 for i in range(1, iters + 1)))
            c["touched"].append(sum(num(r, f"touched_{i}") or 0 for i in range(1, iters + 1)))
            c["lost"].append(num(r, "lost_young"))
            c["p99_us"].append((num(r, "fault_ns_p99") or 0) / 1e3)
            c["median_us"].append((num(r, "fault_ns_median") or 0) / 1e3)
            c["p999_us"].append((num(r, "fault_ns_p999") or 0) / 1e3)
            c["slowest_us"].append((num(r, "fault_ns_slowest") or 0) / 1e3)
    S = lambda cells: {k: {m: summary(v) for m, v in c.items()} for k, c in cells.items()}
    dls, ags = S(dl), S(ag)
    vcpus = sorted({k[2] for k in dls} | {k[2] for k in ags})
    md = []
    p = md.append
    p(f"Machine: {machine.get('nproc')} host CPUs ({machine.get('cpu')}), load average at start "
      f"{machine.get('load')}, {machine.get('qemu')}, commit {machine.get('commit')}, {machine.get('date')}; "
      f"{machine.get('reps')} boots per cell, matrix {machine.get('matrix_secs')} s. Each boot: "
      f"`{machine.get('run_cmd')}`.")
    p("")
    if dls:
        for dirty in ("sw", "hw"):
            p(f"### Dirty log, dirty={dirty} (per pass: median over the boot's passes; ms)")
            p("")
            p("| vCPUs | pages dirtied / pass | dirty pass, parallel | dirty pass, locked | locked / parallel "
              "| get+clear, parallel | get+clear, locked | TLBI / get+clear | write faults / boot (parallel) "
              "| populate, parallel / locked |")
            p("|---|---|---|---|---|---|---|---|---|---|")
            for v in vcpus:
                a, b = dls.get((dirty, "parallel", v)), dls.get((dirty, "locked", v))
                if not a and not b:
                    continue
                a = a or {}
                b = b or {}
                p(f"| {v} | {cell(a.get('dirtied'), digits=0)} | {cell(a.get('dirty_pass_ms'))} | "
                  f"{cell(b.get('dirty_pass_ms'))} | {ratio(med(b.get('dirty_pass_ms')), med(a.get('dirty_pass_ms')))} | "
                  f"{cell(a.get('get_clear_ms'), digits=2)} | {cell(b.get('get_clear_ms'), digits=2)} | "
                  f"{cell(a.get('tlbi'), digits=0)} | {cell(a.get('write_faults'), digits=0)} | "
                  f"{cell(a.get('populate_ms'), digits=0)} / {cell(b.get('populate_ms'), digits=0)} |")
            p("")
        p("### Dirty log goals (medians)")
        p("")
        p("| vCPUs | mode | dirty pass sw / hw (ms) | hw speed-up (goal >= 3) | get+clear sw / hw (ms) "
          "| hw get+clear / sw (goal <= 2) | sw: locked / parallel (goal >= 1.5 at 4, 8) "
          "| hw: locked / parallel (no fault in the passes: no lock on the path) |")
        p("|---|---|---|---|---|---|---|---|")
        for v in vcpus:
            for mode in ("parallel", "locked"):
                sw, hw = dls.get(("sw", mode, v)), dls.get(("hw", mode, v))
                if not sw or not hw:
                    continue
                dsw, dhw = med(sw["dirty_pass_ms"]), med(hw["dirty_pass_ms"])
                gsw, ghw = med(sw["get_clear_ms"]), med(hw["get_clear_ms"])
                lp = lambda d: ratio(med(dls.get((d, "locked", v), {}).get("dirty_pass_ms")),
                                     med(dls.get((d, "parallel", v), {}).get("dirty_pass_ms")))
                p(f"| {v} | {mode} | {dsw:.1f} / {dhw:.1f} | {ratio(dsw, dhw)} | {gsw:.2f} / {ghw:.2f} | "
                  f"{ratio(ghw, gsw)} | {lp('sw') if mode == 'parallel' else ''} | {lp('hw') if mode == 'parallel' else ''} |")
        p("")
    if ags:
        p("### Aging (VTCR_EL2.HA; an aging pass = clear_young over the data memslot + one range TLBI)")
        p("")
        p("| vCPUs | mode | concurrent aging pass (ms) | aging passes / boot | quiescent aging pass (ms) "
          "| young found / touched (sum over passes) | lost_young | fault p99, aging on (µs) "
          "| fault p99, aging off (µs) | on / off (goal <= 1.5, parallel) | fault median on / off (µs) "
          "| fault p99.9 on / off (µs) | slowest fault on / off (µs) |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v in vcpus:
            for mode in ("parallel", "locked"):
                on, off = ags.get((mode, "on", v)), ags.get((mode, "off", v))
                if not on and not off:
                    continue
                on = on or {}
                off = off or {}
                p(f"| {v} | {mode} | {cell(on.get('age_ms'), digits=2)} | {cell(on.get('agings'), digits=0)} | "
                  f"{cell(on.get('final_age_ms'), digits=2)} | {med(on.get('young')) or 0:.0f} / {med(on.get('touched')) or 0:.0f} | "
                  f"{med(on.get('lost')) or 0:.0f} | {cell(on.get('p99_us'), digits=0)} | {cell(off.get('p99_us'), digits=0)} | "
                  f"{ratio(med(on.get('p99_us')), med(off.get('p99_us')))} | "
                  f"{med(on.get('median_us')) or 0:.1f} / {med(off.get('median_us')) or 0:.1f} | "
                  f"{med(on.get('p999_us')) or 0:.0f} / {med(off.get('p999_us')) or 0:.0f} | "
                  f"{med(on.get('slowest_us')) or 0:.0f} / {med(off.get('slowest_us')) or 0:.0f} |")
        p("")
    if failed:
        p(f"Failed boots ({len(failed)}), left out: " + ", ".join(
            f"{r.get('log')} (exit {r.get('exit')}, status {r.get('status')})" for r in failed))
    text = "\n".join(md)
    print(text)
    with open(f"{outdir}/dirtylog-report.md", "w") as f:
        f.write(text + "\n")
    with open(f"{outdir}/dirtylog.json", "w") as f:
        json.dump({"machine": machine,
                   "dirtylog": {f"{d}-{m}-{v}": s for (d, m, v), s in dls.items()},
                   "aging": {f"{m}-{a}-{v}": s for (m, a, v), s in ags.items()},
                   "failed": [r.get("log") for r in failed]}, f, indent=1, sort_keys=True)
    if not plot(plot_path, dls, ags, vcpus, machine):
        return 3
    return 1 if failed else 0


def plot(path, dls, ags, vcpus, machine):
    """Draws the plot; False (with a message) when this python3 has no matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"bench/qemu/dirtylog.py: cannot draw {path}: {e} (Debian: apt-get install python3-matplotlib; "
              f"this is {sys.executable}). The tables and JSON are written.", file=sys.stderr)
        return False
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "s2par", "font.size": 9})
    fig, axs = plt.subplots(1, 3, figsize=(13, 4))
    styles = {("sw", "parallel"): "o-", ("sw", "locked"): "o--", ("hw", "parallel"): "s-", ("hw", "locked"): "s--"}

    def series(ax, key, metric):
        xs, ys, lo, hi = [], [], [], []
        for v in vcpus:
            s = (dls if len(key) == 2 and key[0] in ("sw", "hw") else ags).get(key + (v,), {}).get(metric)
            if s:
                xs.append(v)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
        return xs, ys, [lo, hi]

    for ax, metric, title in ((axs[0], "dirty_pass_ms", "dirty pass (ms)"), (axs[1], "get_clear_ms", "get+clear (ms)")):
        for key, st in styles.items():
            xs, ys, err = series(ax, key, metric)
            if xs:
                ax.errorbar(xs, ys, yerr=err, fmt=st, capsize=3, label=f"dirty={key[0]} {key[1]}")
        ax.set_title(title)
    for mode, st in (("parallel", "-"), ("locked", "--")):
        for aging, mk in (("on", "o"), ("off", "x")):
            xs, ys, err = series(axs[2], (mode, aging), "p99_us")
            if xs:
                axs[2].errorbar(xs, ys, yerr=err, fmt=mk + st, capsize=3, label=f"{mode}, aging={aging}")
    axs[2].set_title("fault time p99 (µs), workload=aging")
    for ax in axs:
        ax.set_xlabel("vCPUs")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(vcpus)
        ax.set_xticklabels([str(v) for v in vcpus])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"s2par dirty logging and aging, QEMU TCG on {machine.get('nproc')} host CPUs "
                 f"({machine.get('reps')} boots per point, median and min..max)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")
    return True


if __name__ == "__main__":
    sys.exit(main())
