"""Shared helpers for the agent benchmarks (SPEC §7 rows 1-4).

Owns: starting a real agent process (the tests' `AgentProcess`), laying out image files for the
file upstream (with Glance sidecars so the agent verifies md5 and sha512 like the reference),
polling the agent until an image is cached, best-effort page-cache control, size parsing and
the uniform "inputs, figures, ratio last" printing every bench script ends with.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.agents import AgentProcess, free_port  # noqa: E402

__all__ = [
    "REPO",
    "AgentProcess",
    "agent_call",
    "drop_page_cache",
    "free_port",
    "machine",
    "make_image_file",
    "median",
    "parse_size",
    "print_report",
    "wait_cached",
]

MiB = 1024 * 1024
_UNITS = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024**4}


def parse_size(text: str) -> int:
    """`1G`, `512M`, `4096` → bytes (binary units, optional trailing `i`/`B`)."""
    value = text.strip().upper().rstrip("B").rstrip("I")
    unit = value[-1] if value and value[-1] in _UNITS else ""
    number = value[:-1] if unit else value
    return int(float(number) * _UNITS[unit])


def make_image_file(directory: Path, image_id: str, size: int, *, seed: int = 0) -> Path:
    """Write `size` pseudo-random bytes to `<directory>/<image_id>` plus a Glance sidecar.

    The sidecar carries md5 and sha512 so the agent verifies both digests, as the reference does.
    Reuses an existing file of the right size (and its sidecar) to keep reruns quick.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / image_id
    sidecar = directory / f"{image_id}.json"
    if path.exists() and path.stat().st_size == size and sidecar.exists():
        return path
    md5, sha512 = hashlib.md5(), hashlib.sha512()
    block = hashlib.shake_256(f"imagecache-bench-{seed}".encode()).digest(4 * MiB)
    with path.open("wb") as out:
        written = 0
        counter = 0
        while written < size:
            # Vary every block cheaply so nothing downstream can dedupe or compress it.
            piece = counter.to_bytes(8, "little") + block[8:]
            piece = piece[: size - written]
            out.write(piece)
            md5.update(piece)
            sha512.update(piece)
            written += len(piece)
            counter += 1
    sidecar.write_text(
        json.dumps(
            {
                "status": "active",
                "checksum": md5.hexdigest(),
                "os_hash_algo": "sha512",
                "os_hash_value": sha512.hexdigest(),
            }
        )
    )
    return path


def link_image(directory: Path, source: Path, image_id: str) -> None:
    """Make `image_id` a hard link to `source` (same bytes and page cache), sidecar copied."""
    target = directory / image_id
    if not target.exists():
        os.link(source, target)
    sidecar = source.with_name(source.name + ".json")
    (directory / f"{image_id}.json").write_text(sidecar.read_text())


def agent_call(agent: AgentProcess, method: str, path: str, timeout: float = 30.0) -> Any:
    """One request to the agent; returns the decoded JSON body (or None when empty)."""
    req = urllib.request.Request(
        f"{agent.url}{path}", method=method, data=b"" if method == "PUT" else None
    )
    with urllib.request.urlopen(req, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_cached(
    agent: AgentProcess, image_id: str, *, timeout: float, interval: float = 0.005
) -> dict[str, Any]:
    """Poll `GET /v2/cache/{id}` until cached; raise on failure or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report: dict[str, Any] = agent_call(agent, "GET", f"/v2/cache/{image_id}")
        if report["state"] == "cached":
            return report
        if report["state"] == "failed":
            raise RuntimeError(f"{image_id} failed: {report.get('error')}")
        time.sleep(interval)
    raise TimeoutError(f"{image_id} not cached within {timeout}s")


def drop_page_cache() -> bool:
    """Flush dirty pages and drop the page cache if allowed; True when it was dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(path: Path) -> None:
    """Read a file once so both contenders start from a warm page cache."""
    with path.open("rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown cpu"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    python = f"Python {platform.python_version()}"
    return f"{cpus} cores ({model}), {mem:.0f} GiB RAM, {python}, {system}, load {load}"


def print_report(
    title: str, inputs: dict[str, Any], figures: dict[str, Any], ratio: tuple[str, float, str]
) -> None:
    """Print inputs, every figure, and the ratio LAST (name, value, target text)."""
    print(f"== {title}")
    print(f"machine: {machine()}")
    for key, value in inputs.items():
        print(f"input  {key}: {value}")
    for key, value in figures.items():
        print(f"figure {key}: {value}")
    name, value, target = ratio
    print(f"ratio  {name}: {value:.3f}  (target {target})")
