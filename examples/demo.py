"""imagecache in one process tree, no cluster needed: a live demo of the operator.

Starts the Kubernetes API emulator (from tests/kube), three real agents on 127.0.0.2-4 over a
directory of sample images it generates, and the operator; creates three "glance-api" pods
whose IPs are the agents'; applies the example requests in this directory; prints each
request's status as it changes (Queued -> Caching n % -> Cached); then deletes the requests
(the evictOnDelete one removes its image from the agent) and cleans everything up.

    .venv/bin/python examples/demo.py [--size-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # the repository root, for tests.kube and tests.operator

from tests.kube.emulator import run_emulator  # noqa: E402
from tests.operator.harness import ICR, AgentPool, agent_get, start_operator  # noqa: E402

EXAMPLES = ["request-single-pod.yaml", "request-selector.yaml", "request-evict-on-delete.yaml"]
IMAGES = ["2c4e8a1e-6f0e-4e7b-9b8a-3f1d2c3b4a5e", "7d0b6f5c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"]
TOKEN = "demo-token"


def generate_images(directory: Path, size: int) -> None:
    """Sample images (pseudo-random bytes) with Glance sidecars (checksum, sha512)."""
    directory.mkdir(parents=True, exist_ok=True)
    for image in IMAGES:
        md5, sha = hashlib.md5(), hashlib.sha512()
        block = hashlib.sha512(image.encode()).digest() * 16384  # 1 MiB
        with (directory / image).open("wb") as out:
            for _ in range(size // len(block)):
                out.write(block)
                md5.update(block)
                sha.update(block)
        sidecar = {
            "status": "active",
            "checksum": md5.hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": sha.hexdigest(),
        }
        (directory / f"{image}.json").write_text(json.dumps(sidecar))


def describe(status: dict[str, Any]) -> str:
    phase = status.get("phase", "-")
    if "summary" in status:
        s = status["summary"]
        return f"{phase:8} {s['cached']}/{s['total']} targets cached  ({status.get('message', '')})"
    percent = (status.get("progress") or {}).get("percent")
    shown = f" {percent} %" if phase == "Caching" and percent is not None else ""
    return f"{phase}{shown:6}  {status.get('reason', '')}: {status.get('message', '')}"


async def demo(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="imagecache-demo-") as tmp:
        root = Path(tmp)
        print(f"generating {len(IMAGES)} sample images of {size >> 20} MiB in {root / 'images'}")
        generate_images(root / "images", size)
        (root / "token").write_text(TOKEN + "\n")
        pool = AgentPool(root=root, upstream=f"file://{root / 'images'}", token_file=root / "token")
        async with run_emulator(workdir=root / "kube") as kube:
            print(f"Kubernetes API emulator at {kube.url} (KUBECONFIG={kube.kubeconfig})")
            operator = None
            try:
                agents = [await asyncio.to_thread(pool.start, n) for n in (2, 3, 4)]
                await kube.client.create_namespace("openstack")
                for n, agent in enumerate(agents):
                    await kube.client.create_pod(
                        "openstack",
                        f"glance-api-{n}",
                        ip=agent.host,
                        labels={"app": "glance-api"},
                        annotations={"imagecache.dev/port": str(agent.port)},
                    )
                    print(f"pod glance-api-{n} -> agent {agent.url}")
                operator = await start_operator(
                    kube, token_file=root / "token", poll_interval=0.25, recheck_interval=30
                )
                names = []
                for example in EXAMPLES:
                    body = yaml.safe_load((REPO / "examples" / example).read_text())
                    await kube.client.create(ICR, body)
                    names.append(body["metadata"]["name"])
                    print(f"applied examples/{example} ({body['metadata']['name']})")
                await watch(kube, names)
                for name in names:
                    await kube.client.delete(ICR, name, namespace="openstack")
                    print(f"deleted {name}")
                await wait_gone(kube, names)
                listing = await asyncio.to_thread(_cached_on, agents[1])
                print(
                    f"glance-api-1 now caches: {listing or 'nothing'} (evictOnDelete removed one)"
                )
            finally:
                if operator is not None:
                    await operator.stop()
                pool.stop_all()


def _cached_on(agent: Any) -> list[str]:
    """Short ids of the images an agent lists as cached."""
    return [e["image_id"][:8] for e in agent_get(agent, "/v2/cache", TOKEN)["cached_images"]]


async def watch(kube: Any, names: list[str], limit: float = 300.0) -> None:
    """Print every status change until all requests are Cached (bounded)."""
    last: dict[str, str] = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = 0
        for name in names:
            obj = await kube.client.get(ICR, name, namespace="openstack")
            status = (obj or {}).get("status") or {}
            line = describe(status)
            if last.get(name) != line:
                last[name] = line
                print(f"  {name:28} {line}")
            done += status.get("phase") == "Cached"
        if done == len(names):
            print("all requests Cached")
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("requests not Cached in time")


async def wait_gone(kube: Any, names: list[str], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        remaining = [n for n in names if await kube.client.get(ICR, n, namespace="openstack")]
        if not remaining:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not deleted in time: {names}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=64, help="size of each sample image")
    args = parser.parse_args()
    asyncio.run(demo(args.size_mib << 20))


if __name__ == "__main__":
    main()
