#!/usr/bin/env python3
"""Instructions the hypervisor executes per stage-2 fault: a deterministic measure of the fault
path, for comparing builds on a machine whose wall-clock times are noisy (docs/performance.md,
"Fault-path trimming").

    bench/qemu/fault-insns.py [ELF] [--mem 4M] [--top 25]

Boots ELF (default: the release build) with 1 vCPU, `workload=demand backing=4k mem=MEM`, under
`-icount shift=0 -d exec,nochain,in_asm` (every translation block logged as it is translated and
each time it runs; the trace is a few hundred MB for mem=4M, written to a temporary file and
deleted). Each trap from the guest is followed from the lower-EL synchronous vector
(`hyp_vectors` + 0x400) to the translation block holding its `eret`; the traps that went through
`handle_stage2_fault` are the faults. Prints, per fault: EL2 instructions (median, min..max,
mean), translation blocks run, returns (each an indirect-branch lookup in TCG), load/store-
exclusive pairs (each exclusive store is a host compare-exchange in TCG), system-register
accesses and barriers, and instructions by function (symbols from the ELF, llvm-nm).
Exit status: 0, or 1 if the boot failed or no fault was found.
"""
import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ELF = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
    "aarch64-unknown-none-softfloat/release/hyp",
)
LOWER_SYNC_OFFSET = 0x400
TRACE = re.compile(r"Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")
SPECIAL = ("mrs", "msr", "dsb", "dmb", "isb", "ldar", "stlr", "ldxr", "ldaxr", "stxr", "stlxr",
           "tlbi", "dc", "ic", "eret")


def find_nm():
    """llvm-nm from PATH (Debian's llvm), else the Rust toolchain's (rustup component
    llvm-tools), else exit with what to install."""
    import glob
    import shutil
    nm = shutil.which("llvm-nm")
    if nm:
        return nm
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True,
                             text=True).stdout.strip()
    found = glob.glob(os.path.join(sysroot, "lib/rustlib/*/bin/llvm-nm"))
    if found:
        return found[0]
    sys.exit("fault-insns.py: llvm-nm not found: apt-get install llvm, or "
             "rustup component add llvm-tools")


def symbols(elf):
    """(sorted addresses, names) of the ELF's code symbols."""
    out = subprocess.run([find_nm(), "-C", "--defined-only", "-n", elf],
                         capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", parts[2])))
    syms.sort()
    return [a for a, _ in syms], [n for _, n in syms]


def parse(trace, text_lo, text_hi, vector):
    """Translation blocks ({pc: [(pc, mnemonic)]}) and the EL2 traps (lists of block pcs)."""
    blocks, traps, block, trap = {}, [], None, None
    with open(trace, errors="replace") as f:
        for line in f:
            if line.startswith("IN:"):
                block = []
                continue
            if block is not None:
                if line.startswith("0x"):
                    fields = line.split(None, 2)
                    mnemonic = fields[2].split()[0] if len(fields) > 2 and fields[2].strip() else "?"
                    block.append((int(fields[0].rstrip(":"), 16), mnemonic))
                    continue
                if block:
                    blocks[block[0][0]] = block
                block = None
            m = TRACE.match(line)
            if not m:
                continue
            pc = int(m.group(1), 16)
            if pc == vector:
                trap = []
            if trap is not None and text_lo <= pc < text_hi:
                trap.append(pc)
                if any(mn == "eret" for _, mn in blocks.get(pc, [])):
                    traps.append(trap)
                    trap = None
    return blocks, traps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("elf", nargs="?", default=DEFAULT_ELF)
    ap.add_argument("--mem", default="4M", help="guest data region (default 4M = 1024 faults)")
    ap.add_argument("--top", type=int, default=25, help="functions to list")
    args = ap.parse_args()
    addrs, names = symbols(args.elf)
    sym = lambda pc: names[bisect.bisect_right(addrs, pc) - 1] if pc >= addrs[0] else "?"
    vector = addrs[names.index("hyp_vectors")] + LOWER_SYNC_OFFSET
    fault_fns = {a for a, n in zip(addrs, names) if n.endswith("handle_stage2_fault")}
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.log")
        env = dict(os.environ, SMP="8", MEM="512M",
                   QEMU_EXTRA=f"-mem-prealloc -icount shift=0 -d exec,nochain,in_asm -D {trace}")
        run = subprocess.run([os.path.join(ROOT, "run-qemu.sh"), args.elf, "--timeout", "300",
                              "vcpus=1", "mode=parallel", "workload=demand", "backing=4k",
                              f"mem={args.mem}"], env=env, capture_output=True, text=True)
        result = [l for l in run.stdout.splitlines() if l.startswith("RESULT")]
        if run.returncode != 0 or not result or "status=pass" not in result[0]:
            print(f"fault-insns: the boot failed (exit {run.returncode})", file=sys.stderr)
            return 1
        blocks, traps = parse(trace, addrs[0], addrs[-1] + 0x1000, vector)
    faults = [t for t in traps
              if any(addrs[bisect.bisect_right(addrs, pc) - 1] in fault_fns for pc in t)]
    if not faults:
        print("fault-insns: no stage-2 fault trap found in the trace", file=sys.stderr)
        return 1
    per_fn, kinds, counts = collections.Counter(), collections.Counter(), []
    for t in faults:
        n = 0
        for pc in t:
            for ipc, mnemonic in blocks.get(pc, []):
                n += 1
                per_fn[sym(ipc)] += 1
                kinds[mnemonic] += 1
        counts.append(n)
    counts.sort()
    k = len(faults)
    print(f"{args.elf}: {k} stage-2 fault traps of {len(traps)} traps (1 vCPU, demand 4k, "
          f"mem={args.mem})")
    print(f"EL2 instructions per fault, vector to eret: median {counts[k // 2]} "
          f"({counts[0]}..{counts[-1]}), mean {sum(counts) / k:.1f}")
    tbs = sorted(len(t) for t in faults)
    exclusive = sum(kinds[m] for m in ("ldxr", "ldaxr", "ldxrb", "ldaxrb")) / k
    print(f"per fault: {tbs[k // 2]} translation blocks (median), {kinds['ret'] / k:.2f} ret, "
          f"{(kinds['blr'] + kinds['br']) / k:.2f} blr/br, {exclusive:.2f} exclusive pairs")
    print("system-register accesses and barriers per fault: " + ", ".join(
        f"{m} {kinds[m] / k:.2f}" for m in SPECIAL if kinds[m]))
    print("instructions per fault by function:")
    for name, c in per_fn.most_common(args.top):
        print(f"  {c / k:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
