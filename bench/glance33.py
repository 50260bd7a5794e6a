"""A real Glance 33 (glance-api under uWSGI, from the OpenStack venv the tests use) holding one
image, for `cpu_per_byte.py --glance`: Glance caching that image on a read-through `GET`.

No Keystone: the paste flavor `cachemanagement` (Glance's own, unauthenticated: every request
is an admin context without roles) with the image cache enabled, a filesystem store, sqlite,
and a policy file allowing every Glance rule (generated from Glance's own rule list), since the
new policy defaults want roles an unauthenticated context does not have. The image is
uploaded once (Glance computes md5 and sha512 as it stores it). `cache_once` then reads
`GET /v2/images/{id}/file` (Glance's cache middleware tees the bytes into its cache and checks
the md5 at the end, as the agent's read-through does), runs `sync`, and removes the image from
Glance's cache again (`DELETE /v2/cache/{id}`); it returns the wall time and the CPU time of
every process of the uWSGI group (from /proc).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import REPO, free_port

from tests.openstack.glance_service import GLANCE_STORE_CONF, glance_api
from tests.openstack.processes import UwsgiService, run_command
from tests.openstack.venv import OpenStackVenv

VENV = Path.home() / ".cache" / "imagecache" / "openstack-venv"
TICKS = os.sysconf("SC_CLK_TCK")

CONF = (
    GLANCE_STORE_CONF.replace("{cache_max_size}", "107374182400")
    + """\
[paste_deploy]
flavor = cachemanagement
config_file = {paste_ini}

[oslo_concurrency]
lock_path = {workdir}/locks

[oslo_policy]
policy_file = {workdir}/policy.yaml
enforce_scope = false
"""
)

ALL_RULES = (
    "import json\n"
    "from glance.policies import list_rules\n"
    "print(json.dumps({rule.name: '@' for rule in list_rules()}))\n"
)


def group_cpu(pgid: int) -> float:
    """User + system seconds of every live process in process group `pgid`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def available() -> bool:
    return (VENV / "bin" / "uwsgi").exists() and (VENV / "bin" / "glance-manage").exists()


class Glance:
    def __init__(self, service: UwsgiService, image_id: str) -> None:
        self.service = service
        self.image_id = image_id

    def request(self, method: str, path: str, **kwargs: object) -> bytes:
        req = urllib.request.Request(f"{self.service.url}{path}", method=method, **kwargs)  # type: ignore[arg-type]
        with urllib.request.urlopen(req, timeout=900) as response:
            return bytes(response.read())

    def cache_once(self) -> tuple[float, float]:
        """(wall, Glance CPU) of a read-through GET that caches the image, plus `sync`."""
        assert self.service.process is not None
        pgid = self.service.process.pid
        cpu = group_cpu(pgid)
        started = time.perf_counter()
        req = urllib.request.Request(f"{self.service.url}/v2/images/{self.image_id}/file")
        with urllib.request.urlopen(req, timeout=900) as response:
            while response.read(4 * 2**20):
                pass
        os.sync()
        wall = time.perf_counter() - started
        used = group_cpu(pgid) - cpu
        listing = json.loads(self.request("GET", "/v2/cache"))
        cached = [entry["image_id"] for entry in listing.get("cached_images", [])]
        if self.image_id not in cached:
            raise RuntimeError(f"Glance did not cache the image: {listing}")
        self.request("DELETE", f"/v2/cache/{self.image_id}")
        return wall, used


@contextmanager
def glance_33(workdir: Path, source: Path) -> Iterator[Glance]:
    """Glance 33 on a free loopback port with `source` uploaded as one active image."""
    venv = OpenStackVenv(VENV)
    shutil.rmtree(workdir, ignore_errors=True)
    for folder in ("cache", "images", "staging", "tasks", "locks"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = workdir / "glance-api.conf"
    conf.write_text(
        CONF.format(
            workdir=workdir, url=url, paste_ini=venv.path / "etc/glance/glance-api-paste.ini"
        )
    )
    env = {"PATH": f"{venv.path / 'bin'}:{os.environ['PATH']}", "HOME": str(Path.home())}
    rules = run_command([str(venv.python), "-c", ALL_RULES], env=env)
    (workdir / "policy.yaml").write_text(rules)  # JSON is YAML
    service = glance_api(venv, conf=conf, port=port, workdir=workdir, env=env)
    service.start(probe_path="/versions")
    try:
        glance = Glance(service, "")
        doc = json.loads(
            glance.request(
                "POST",
                "/v2/images",
                data=json.dumps(
                    {"name": "bench", "disk_format": "raw", "container_format": "bare"}
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
        )
        glance.image_id = doc["id"]
        with source.open("rb") as body:
            glance.request(
                "PUT",
                f"/v2/images/{glance.image_id}/file",
                data=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(source.stat().st_size),
                },
            )
        image = json.loads(glance.request("GET", f"/v2/images/{glance.image_id}"))
        if image.get("status") != "active":
            raise RuntimeError(f"Glance image not active: {image}")
        yield glance
    finally:
        service.stop()


__all__ = ["REPO", "Glance", "available", "glance_33"]
