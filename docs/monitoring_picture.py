"""Draw docs/monitoring.png: the key panels of the chart's Grafana dashboard from a real run.

The set-up of tests/monitoring (tests/monitoring/scenario.py): the Kubernetes API emulator, the
real operator, three real agents (``max_size`` 128 MiB, so the cache-use panel moves) on an HTTP
upstream that pauses once inside each image, and a real Prometheus scraping them every second
with the chart's alert rules. Waves of ImageCacheRequests arrive for ``--seconds``; two images
are corrupt upstream and fail. Then every panel drawn runs its own dashboard query
(charts/imagecache/files/dashboard.json, ``$__rate_interval`` = 10s) through Prometheus'
``query_range`` and matplotlib draws the series.

Run from the repository root with the project venv and the `bench` extra (matplotlib), helm in
.tools/bin and Debian's prometheus package installed::

    .venv/bin/python docs/monitoring_picture.py            # --seconds 45 --out docs/monitoring.png
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.*

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tests.chart.conftest import find_helm  # noqa: E402
from tests.kube.emulator import run_emulator  # noqa: E402
from tests.monitoring.rules import dashboard_queries, instantiate, render_rule_groups  # noqa: E402
from tests.monitoring.scenario import NAMESPACE, Fleet, monitored_fleet  # noqa: E402
from tests.operator.harness import image_bytes, image_id  # noqa: E402
from tests.support.prometheus import find_binary  # noqa: E402
from tests.support.upstreams import Faults  # noqa: E402

PANELS = [
    ("Requests by phase", "requests"),
    ("Time from request to Cached", "seconds"),
    ("Bytes cached per second, per agent", "MiB/s"),
    ("Cache use vs max_size", "fraction"),
    ("Queue length", "images"),
    ("Download failures by reason", "failures/s"),
    ("Upstream and peer bytes", "MiB/s"),
    ("Reconcile tick duration", "seconds"),
    ("Kubernetes API writes per second", "writes/s"),
]
SCALE = {"MiB/s": 1 / (1 << 20)}
MIB = 1 << 20


async def workload(fleet: Fleet, *, seconds: float) -> None:
    """A wave of three requests every 3 s for `seconds`; images 2-8 MiB; two corrupt ones."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        for _ in range(3):
            image = image_id(1000 + n)
            size = (2 + (n * 5) % 7) * MIB
            fleet.upstream.add(image, image_bytes(f"picture-{n}", size))
            fleet.upstream.faults[image] = Faults(
                stall_after=size // 2, stall_seconds=1.0 + (n % 3), corrupt=n in (7, 19)
            )
            await fleet.request(f"image-{n}", image, fleet.pods[n % len(fleet.pods)])
            n += 1
        await asyncio.sleep(3)


def draw(results: dict[str, list[tuple[str, list[Any]]]], *, start: float, out: Path) -> None:
    figure, axes = plt.subplots(3, 3, figsize=(15, 10), sharex=True)
    for axis, (title, unit) in zip(axes.flat, PANELS, strict=True):
        top = 0.0
        for label, values in results[title]:
            xs = [float(t) - start for t, _ in values]
            ys = [float(v) * SCALE.get(unit, 1.0) for _, v in values]
            finite = [y for y in ys if math.isfinite(y)]
            if any(finite) or title == "Queue length":
                axis.plot(xs, ys, label=label, linewidth=1.2, marker="." if len(xs) < 30 else "")
                top = max([top, *finite])
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0, top=top * 1.35 if top > 0 else 1)  # room for the legend
        axis.set_ylabel(unit, fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the first request", fontsize=8)
    figure.suptitle(
        "imagecache dashboard panels from a real run (3 agents, operator, Prometheus)",
        fontsize=12,
    )
    figure.tight_layout()
    figure.savefig(out, dpi=80)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="how long requests arrive")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "monitoring.png")
    args = parser.parse_args()
    helm, prometheus = find_helm(), find_binary("prometheus")
    if helm is None or prometheus is None:
        raise SystemExit("needs helm (.ci/install-k8s-tools.sh) and prometheus (apt-get)")
    groups = render_rule_groups(helm)
    with tempfile.TemporaryDirectory(prefix="monitoring-picture-") as tmp:
        workdir = Path(tmp)
        async with (
            run_emulator(workdir=workdir / "kube") as kube,
            monitored_fleet(
                kube=kube,
                workdir=workdir,
                prometheus_binary=prometheus,
                rule_groups=groups,
                agents=3,
                agent_args=["--max-size", "128M", "--workers", "2"],
            ) as fleet,
        ):
            start = time.time()
            await workload(fleet, seconds=args.seconds)
            await asyncio.sleep(15)  # let the last downloads finish and be scraped
            end = time.time()
            queries: dict[str, list[tuple[str, str]]] = {title: [] for title, _ in PANELS}
            for title, ref, expr in dashboard_queries():
                if title in queries and (title, ref) != ("Cache use vs max_size", "B"):
                    queries[title].append(
                        (ref, instantiate(expr, namespace=NAMESPACE, rate_interval="10s"))
                    )
            results: dict[str, list[tuple[str, list[Any]]]] = {}
            for title, exprs in queries.items():
                results[title] = []
                for ref, expr in exprs:
                    for series in fleet.prometheus.query_range(expr, start=start, end=end, step=1):
                        labels = series["metric"]
                        label = " ".join(labels.values()) or ref
                        if title.startswith(("Time from", "Reconcile")):
                            label = {"A": "p50", "B": "p90", "C": "p99"}[ref]
                        elif title == "Cache use vs max_size":
                            label = f"{labels.get('pod')} used of max_size"
                        results[title].append((label, series["values"]))
            print(f"requests: {len(fleet.upstream.images)}, {end - start:.0f} s of data")
    draw(results, start=start, out=args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
