"""The QEMU benches' records, shared by report.py (run.sh) and dirtylog.py (dirtylog.sh): the
RUNS file (one boot a line: `key=value` tokens, the script's own then the boot's RESULT line),
the MACHINE file (`key=value` lines) and the median/min/max summary their tables print.
"""

import statistics


def parse_runs(path):
    """The RUNS file's boots, one dict a non-empty line (values are strings)."""
    rows = []
    with open(path) as f:
        for line in f:
            row = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if row:
                rows.append(row)
    return rows


def read_machine(path):
    """The MACHINE file as a dict; a value keeps any `=` after the first."""
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def num(row, key):
    """`row[key]` as a float, or None when missing or not a number."""
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return None


def summary(values):
    """{median, min, max, n} of the values that are not None, or None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
