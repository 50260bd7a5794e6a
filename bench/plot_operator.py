"""Draw the operator's scaling (issue 14): time and CPU per request against the request count.

Reads the JSON lines `operator_scale.py --record FILE` appends (one per run) and writes a PNG
with two panels: the wall time to all Cached (through the operator, and the agents alone), and
the operator's CPU per request, both against the number of requests (log scale).

    .venv/bin/python bench/plot_operator.py runs.jsonl bench/operator_scale.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description="plot operator_scale.py runs")
    parser.add_argument("runs", type=Path, help="JSON lines from operator_scale.py --record")
    parser.add_argument("output", type=Path, help="the PNG to write")
    args = parser.parse_args()
    runs = [json.loads(line) for line in args.runs.read_text().splitlines() if line.strip()]
    runs.sort(key=lambda run: run["requests"])
    counts = [run["requests"] for run in runs]
    ticks = sorted({run["requests"]: f"{run['requests']}/{run['agents']}" for run in runs}.items())
    labels = [label for _, label in ticks]  # several runs of one size: one tick, several points
    figure, (times, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    times.plot(counts, [r["operator_seconds"] for r in runs], "o-", label="through the operator")
    times.plot(counts, [r["agents_alone_seconds"] for r in runs], "s--", label="agents alone")
    times.set_xscale("log")
    times.set_xlabel("requests (requests/agents at each point)")
    times.set_ylabel("seconds to all Cached")
    times.minorticks_off()
    times.set_xticks([count for count, _ in ticks], labels)
    times.legend()
    times.grid(alpha=0.3)
    per_request = [r["settled_cpu"] * 1000 / r["requests"] for r in runs]
    cpu.plot(
        counts, per_request, "o-", color="tab:red", label="operator CPU per request, until settled"
    )
    cpu.axhline(5.0, color="gray", linestyle=":", label="target: 5 s per 1,000 requests")
    cpu.set_xscale("log")
    cpu.set_xlabel("requests (requests/agents at each point)")
    cpu.set_ylabel("CPU ms per request (= s per 1,000)")
    cpu.minorticks_off()
    cpu.set_xticks([count for count, _ in ticks], labels)
    cpu.set_ylim(bottom=0)
    cpu.legend()
    cpu.grid(alpha=0.3)
    poll = runs[0]["poll_interval"] if runs else 0
    seconds = runs[0]["cache_seconds"] if runs else 0
    figure.suptitle(
        f"imagecache operator, simulated agents ({seconds:g} s per image, poll {poll:g} s), "
        "2 shared cores"
    )
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
