#!/usr/bin/env python3
"""The quality benchmark's table from `evaluate` outputs (standard library only).

Usage: quality_table.py [--taus 0.5,1] LABEL=DIR[,DIR...] ...

Each DIR holds an `evaluate` run's `metrics.csv`; several DIRs of one label
are seeds, shown as mean +- std (sample std; a single seed shows its
value). A DIR may hold `s_per_frame.txt` (sampling seconds per test frame).
The radar-alone row comes from the first DIR (every run scores the same
radar frames). Columns: IoU, F1, Chamfer (m), F at each tau, predicted /
target voxel count, z-spread ratio, and the 0-20 m band's IoU and F1.
A variant counts as better than another only where its mean beats the
other's by more than both stds.
"""

import csv
import pathlib
import statistics
import sys


def overall(d):
    with open(pathlib.Path(d) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["row_kind"] == "overall":
                return row
    raise SystemExit(f"{d}/metrics.csv has no overall row")


def tau_name(t):
    return f"{float(t):g}m"


def main(argv):
    taus = ["0.5", "1"]
    if argv[:1] == ["--taus"]:
        taus, argv = argv[1].split(","), argv[2:]
    if not argv:
        raise SystemExit(__doc__)
    keys = ["iou", "f1", "chamfer"] + [f"f@{tau_name(t)}" for t in taus]
    keys += ["count_ratio", "z_spread_ratio", "x0_20_iou", "x0_20_f1"]
    heads = ["IoU", "F1", "Chamfer (m)"] + [f"F@{float(t):g} m" for t in taus]
    heads += ["count ratio", "z-spread ratio", "0-20 m IoU", "0-20 m F1", "s / frame"]
    print("| variant | seeds | " + " | ".join(heads) + " |")
    print("|---|---:|" + "---:|" * len(heads))
    radar = None
    for arg in argv:
        label, _, dirs = arg.partition("=")
        dirs = dirs.split(",")
        rows = [overall(d) for d in dirs]
        radar = radar or rows[0]
        cells = []
        for k in keys:
            v = [float(r[f"pred_{k}"]) for r in rows]
            sd = statistics.stdev(v) if len(v) > 1 else None
            cells.append(f"{statistics.mean(v):.3f}" + (f" +- {sd:.3f}" if sd is not None else ""))
        secs = [pathlib.Path(d) / "s_per_frame.txt" for d in dirs]
        secs = [float(p.read_text().split()[0]) for p in secs if p.exists()]
        cells.append(f"{statistics.mean(secs):.2f}" if secs else "-")
        print(f"| {label} | {len(dirs)} | " + " | ".join(cells) + " |")
    print("| radar alone | - | " + " | ".join(f"{float(radar[f'radar_{k}']):.3f}" for k in keys) + " | - |")


if __name__ == "__main__":
    main(sys.argv[1:])
