#!/usr/bin/env python3
"""The agent's CPU per GiB against the same agent before a change, alternating in one run.

Two agent processes — this tree's and one importing the package from `--before` (a source
root, e.g. `/work/main/operator`) — cache the same image from the same Glance-like HTTP upstream
(cpu_per_byte.glance_like), one after the other, for `--rounds` rounds; `--digests` chooses what
the upstream gives (`both`: md5 + sha512, `sha512`, `none`). CPU = user + system seconds of each
agent process (/proc) from `PUT` to `cached`. Alternating rounds of the same work are the only
fair comparison on a shared machine; the ratio (after / before, medians) is printed last.

Usage: python bench/agent_ab.py --before /work/main/operator [--size 256M] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from common import AgentProcess, make_image_file, median, parse_size, print_report
from cpu_per_byte import cache_once, fmt, glance_like


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, required=True, help="source root before")
    parser.add_argument("--size", default="256M")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--digests", choices=("both", "sha512", "none"), default="both")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = parse_size(args.size)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagecache-ab-"))
    source = make_image_file(workdir / "source", "base", size)
    sidecar = json.loads((workdir / "source" / "base.json").read_text())
    meta: dict[str, object] = {"status": "active", "size": size}
    if args.digests == "both":
        meta.update(sidecar)
    elif args.digests == "sha512":
        meta.update(os_hash_algo="sha512", os_hash_value=sidecar["os_hash_value"])
    cpus: dict[str, list[float]] = {"after": [], "before": []}
    with glance_like(source, meta) as url:
        agents: dict[str, AgentProcess] = {}
        saved = dict(os.environ)
        try:
            for name in cpus:
                shutil.rmtree(workdir / name, ignore_errors=True)
                if name == "before":
                    os.environ["PYTHONPATH"] = str(args.before)
                agents[name] = AgentProcess(
                    cache_dir=workdir / name,
                    upstream=f"glance+{url}",
                    extra_args=["--log-level", "WARNING"],
                )
                agents[name].start()
                os.environ.clear()
                os.environ.update(saved)
            for _ in range(args.rounds):
                for name, agent in agents.items():
                    cpus[name].append(cache_once(agent, str(uuid.uuid4()))[1])
        finally:
            for agent in agents.values():
                if agent.process is not None:
                    agent.stop()
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    gib = size / 2**30
    after, before = median(cpus["after"]), median(cpus["before"])
    print_report(
        "agent CPU per GiB: this tree vs before, alternating",
        {
            "size": f"{size} bytes",
            "rounds": args.rounds,
            "digests": args.digests,
            "before": str(args.before),
        },
        {
            "after CPU s (each)": fmt(cpus["after"]),
            "before CPU s (each)": fmt(cpus["before"]),
            "after median CPU s per GiB": f"{after / gib:.2f}",
            "before median CPU s per GiB": f"{before / gib:.2f}",
        },
        ("after / before CPU (median)", after / before, "< 1: less CPU per byte"),
    )


if __name__ == "__main__":
    main()
