#!/usr/bin/env python3
"""SPEC §7 row 2: peak RSS of the agent process while it caches 4 × 1 GiB at once.

Starts an agent with `--workers COUNT`, queues COUNT distinct images (hard links to one source
file, each with an md5/sha512 sidecar so full verification runs) and samples the agent's RSS
(psutil, the agent process and any children) every 5 ms from before the first PUT until every
image is cached. Prints the baseline (idle, after start) and the peak.

Usage: python bench/memory.py [--size 1G] [--count 4] [--workdir DIR]
Target: peak RSS < 120 MiB (Glance 33: +1.1 GiB for a single 1 GiB image).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import (
    AgentProcess,
    agent_call,
    link_image,
    make_image_file,
    parse_size,
    print_report,
    wait_cached,
)

MiB = 2**20


def rss(process: psutil.Process) -> int:
    total: int = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G", help="size of each image (default 1G)")
    parser.add_argument("--count", type=int, default=4, help="images cached at once (default 4)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = parse_size(args.size)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagecache-bench-"))
    source_dir = workdir / "source"
    source = make_image_file(source_dir, "base", size)
    ids = [f"mem-{int(time.time())}-{i}" for i in range(args.count)]
    for image_id in ids:
        link_image(source_dir, source, image_id)
    cache_dir = workdir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    agent = AgentProcess(
        cache_dir=cache_dir,
        upstream=f"file://{source_dir}",
        extra_args=["--workers", str(args.count), "--log-level", "WARNING"],
    )
    agent.start()
    assert agent.process is not None
    process = psutil.Process(agent.process.pid)
    baseline = rss(process)
    peak = baseline
    samples = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, rss(process))
            samples += 1
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        for image_id in ids:
            agent_call(agent, "PUT", f"/v2/cache/{image_id}")
        for image_id in ids:
            wait_cached(agent, image_id, timeout=1200, interval=0.05)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        sampler.join(5)
        agent.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    rate = args.count * size / MiB / elapsed
    print_report(
        "agent memory while caching images concurrently",
        {
            "images": args.count,
            "size each": f"{size} bytes ({size / MiB:.0f} MiB)",
            "workers": args.count,
        },
        {
            "baseline RSS (idle)": f"{baseline / MiB:.1f} MiB",
            "peak RSS": f"{peak / MiB:.1f} MiB",
            "growth": f"{(peak - baseline) / MiB:.1f} MiB",
            "RSS samples": samples,
            "time to cache all": f"{elapsed:.2f} s ({rate:.0f} MiB/s total)",
        },
        ("peak RSS MiB / 120 MiB", peak / MiB / 120, "< 1.0"),
    )


if __name__ == "__main__":
    main()
