#!/usr/bin/env python3
"""SPEC §7 row 1: caching one image from a file upstream vs the reference copier, side by side.

For `--runs` rounds, alternately: `reference_copy.py SRC DST` (its own printed seconds: read,
md5 + sha512 in threads, write, fsync, rename, fsync dir), then the agent caching the same bytes
(wall time from sending `PUT /v2/cache/{id}` to seeing `state == cached`, polled every 5 ms —
so the agent's figure also carries the HTTP round trips the reference does not have). Each
agent round uses a fresh image id that is a hard link to the same source file, so both
contenders read identical bytes. Before every timed run dirty pages are flushed and the page
cache is dropped when allowed (root with a writable /proc/sys/vm/drop_caches); otherwise the
source is read once beforehand so both start warm. Destinations are on the same filesystem.

Usage: python bench/cache_throughput.py [--size 1G] [--runs 3] [--workdir DIR]
Target: median agent time ≤ 1.05 × median reference time (ratio printed last).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    AgentProcess,
    agent_call,
    drop_page_cache,
    link_image,
    make_image_file,
    median,
    parse_size,
    print_report,
    wait_cached,
    warm,
)

REFERENCE = Path("/work/shared/bench/reference_copy.py")


def run_reference(source: Path, destination: Path) -> float:
    done = subprocess.run(
        [sys.executable, str(REFERENCE), str(source), str(destination)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    match = re.match(r"\s*([0-9.]+) s", done.stdout)
    if match is None:
        raise RuntimeError(f"unexpected reference output: {done.stdout!r}")
    destination.unlink()
    return float(match.group(1))


def run_agent(agent: AgentProcess, image_id: str, size: int) -> tuple[float, float | None]:
    """Seconds from PUT to cached as seen by the client, and the agent's own started→cached."""
    started = time.perf_counter()
    agent_call(agent, "PUT", f"/v2/cache/{image_id}")
    report = wait_cached(agent, image_id, timeout=600)
    wall = time.perf_counter() - started
    assert report.get("size") in (None, size), report
    own = None
    if report.get("cached_at") and report.get("started_at"):
        own = float(report["cached_at"]) - float(report["started_at"])
    agent_call(agent, "DELETE", f"/v2/cache/{image_id}")  # free the space for the next round
    return wall, own


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G", help="image size (default 1G)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of each contender (default 3)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where files go (default: a temp dir)"
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagecache-bench-"))
    source_dir = workdir / "source"
    source = make_image_file(source_dir, "base", size)
    cache_dir = workdir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    agent = AgentProcess(
        cache_dir=cache_dir, upstream=f"file://{source_dir}", extra_args=["--log-level", "WARNING"]
    )
    agent.start()
    reference_times: list[float] = []
    agent_times: list[float] = []
    agent_own: list[float] = []
    dropped = True
    try:
        for run in range(args.runs):
            image_id = f"bench-{int(time.time())}-{run}"
            link_image(source_dir, source, image_id)
            dropped = drop_page_cache() and dropped
            if not dropped:
                warm(source)
            reference_times.append(run_reference(source, workdir / "reference.out"))
            dropped = drop_page_cache() and dropped
            if not dropped:
                warm(source)
            wall, own = run_agent(agent, image_id, size)
            agent_times.append(wall)
            if own is not None:
                agent_own.append(own)
            print(
                f"run {run + 1}: reference {reference_times[-1]:.3f} s, agent {wall:.3f} s",
                flush=True,
            )
    finally:
        agent.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ref, ours = median(reference_times), median(agent_times)
    mib = size / 2**20
    print_report(
        "cache throughput: agent vs reference_copy.py",
        {
            "size": f"{size} bytes ({mib:.0f} MiB)",
            "runs": args.runs,
            "page cache": "dropped before each run" if dropped else "warm (could not drop)",
        },
        {
            "reference seconds (each)": ", ".join(f"{t:.3f}" for t in reference_times),
            "agent seconds PUT→cached (each)": ", ".join(f"{t:.3f}" for t in agent_times),
            "agent seconds started→cached, own report (each)": ", ".join(
                f"{t:.3f}" for t in agent_own
            )
            or "n/a",
            "reference median": f"{ref:.3f} s ({mib / ref:.0f} MiB/s)",
            "agent median": f"{ours:.3f} s ({mib / ours:.0f} MiB/s)",
        },
        ("agent / reference (median)", ours / ref, "≤ 1.05, aim < 1.0"),
    )


if __name__ == "__main__":
    main()
