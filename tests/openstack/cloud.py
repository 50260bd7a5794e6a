"""One small OpenStack cloud for tests: Keystone + Glance on loopback, users, images, clouds.yaml.

`running_openstack(venv, workdir, token_expiration=...)` starts Keystone, provisions it
(projects `service` and `demo`, users `glance` and `demo`, the image service in the catalog, an
application credential of `admin`), starts Glance, uploads the test images through the Glance
API, writes a `clouds.yaml` with three clouds, and on exit stops both services.

The clouds in `clouds.yaml`:
- `admin`: password auth, the bootstrap admin (role `admin` in project `admin`);
- `demo`: password auth, role `member` only, in project `demo`;
- `appcred`: the application credential of `admin` (so role `admin` in project `admin`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.openstack.glance_service import GLANCE_PROBE, spawn_glance
from tests.openstack.keystone_service import start_keystone
from tests.openstack.processes import UwsgiService, run_command
from tests.openstack.venv import OpenStackVenv
from tests.support.agents import free_port

REGION = "RegionOne"
ADMIN_PASSWORD = "admin-secret"
DEMO_PASSWORD = "demo-secret"
GLANCE_PASSWORD = "glance-secret"
APPCRED_SECRET = "appcred-secret"
CLOUD_NAMES = ("admin", "demo", "appcred")

# name -> size in bytes; one size is not a multiple of any block size on purpose.
TEST_IMAGE_SIZES = {
    "imagecache-test-small": 200 * 1024 + 13,
    "imagecache-test-medium": 384 * 1024,
    "imagecache-test-large": 768 * 1024 + 1,
}

PROVISION_SCRIPT = Path(__file__).with_name("provision.py")


def image_bytes(name: str, size: int) -> bytes:
    """Deterministic, incompressible-looking bytes for the image called `name`."""
    blocks: list[bytes] = []
    counter = 0
    while 32 * len(blocks) < size:
        blocks.append(hashlib.sha256(f"{name}:{counter}".encode()).digest())
        counter += 1
    return b"".join(blocks)[:size]


@dataclass(frozen=True)
class TestImage:
    """An image uploaded to the test Glance, with what Glance recorded for it."""

    id: str
    name: str
    data: bytes = field(repr=False)
    checksum: str
    os_hash_algo: str
    os_hash_value: str

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class OpenStackCloud:
    """A running Keystone + Glance pair and what tests need to talk to them."""

    venv: OpenStackVenv
    keystone_url: str  # the identity endpoint, ending in /v3
    glance_url: str  # the image endpoint as in the catalog (no version suffix)
    region: str
    token_expiration: int  # seconds
    admin_password: str
    demo_password: str
    appcred_id: str
    appcred_secret: str
    clouds_yaml: Path
    images: tuple[TestImage, ...]
    workdir: Path
    base_env: dict[str, str] = field(repr=False)

    def env(self, cloud: str | None = None) -> dict[str, str]:
        """Environment for an OpenStack client: this clouds.yaml and, if given, `OS_CLOUD`."""
        env = {**self.base_env, "OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)}
        if cloud is not None:
            env["OS_CLOUD"] = cloud
        return env

    def openstack(self, *args: str, cloud: str = "admin", timeout: float = 60.0) -> str:
        """Run the stock `openstack` CLI against cloud `cloud`; its stdout or ServiceFailed."""
        return run_command(
            [str(self.venv.bin("openstack")), "--os-cloud", cloud, *args],
            env=self.env(),
            timeout=timeout,
        )

    def issue_token(self, cloud: str = "admin") -> str:
        """A fresh Keystone token for `cloud`, from `openstack token issue`."""
        answer = json.loads(self.openstack("token", "issue", "-f", "json", cloud=cloud))
        return str(answer["id"])

    def image(self, name: str) -> TestImage:
        return next(image for image in self.images if image.name == name)


def client_env() -> dict[str, str]:
    """This process's environment without anything that would steer the OpenStack tools."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "OS_CLOUD", "OS_CLIENT_CONFIG_FILE")
    return {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and not key.startswith("OS_")
    }


def provision(venv: OpenStackVenv, workdir: Path, action: str, request: dict[str, Any]) -> Any:
    """Run provision.py `action` with the venv's Python; its JSON answer."""
    request_path = workdir / f"provision-{action}.json"
    request_path.write_text(json.dumps(request))
    answer = run_command(
        [str(venv.python), "-I", str(PROVISION_SCRIPT), action, str(request_path)],
        env=client_env(),
        timeout=180,
    )
    return json.loads(answer)


def write_clouds_yaml(path: Path, *, keystone_url: str, appcred_id: str) -> None:
    def password_cloud(user: str, password: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": keystone_url,
                "username": user,
                "password": password,
                "project_name": user,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "interface": "public",
            "identity_api_version": 3,
        }

    clouds = {
        "admin": password_cloud("admin", ADMIN_PASSWORD),
        "demo": password_cloud("demo", DEMO_PASSWORD),
        "appcred": {
            "auth_type": "v3applicationcredential",
            "auth": {
                "auth_url": keystone_url,
                "application_credential_id": appcred_id,
                "application_credential_secret": APPCRED_SECRET,
            },
            "region_name": REGION,
            "interface": "public",
            "identity_api_version": 3,
        },
    }
    path.write_text(yaml.safe_dump({"clouds": clouds}, sort_keys=False))


@contextmanager
def running_openstack(
    venv: OpenStackVenv, workdir: Path, *, token_expiration: int = 3600
) -> Iterator[OpenStackCloud]:
    """Start, provision and yield a cloud; stop its services on exit (even on failure).

    Glance loads while Keystone is set up (it asks Keystone nothing until a request comes).
    """
    started = time.monotonic()
    env = client_env()
    keystone_port, glance_port = free_port(), free_port()
    glance_url = f"http://127.0.0.1:{glance_port}"
    with ExitStack() as stack:
        keystone_url = f"http://127.0.0.1:{keystone_port}/v3"
        glance = spawn_glance(
            venv,
            workdir / "glance",
            port=glance_port,
            env=env,
            keystone_url=keystone_url,
            glance_password=GLANCE_PASSWORD,
            region=REGION,
        )
        stack.callback(glance.stop)
        keystone: UwsgiService = start_keystone(
            venv,
            workdir / "keystone",
            port=keystone_port,
            env=env,
            admin_password=ADMIN_PASSWORD,
            region=REGION,
            token_expiration=token_expiration,
        )
        stack.callback(keystone.stop)
        common = {"auth_url": keystone_url, "admin_password": ADMIN_PASSWORD, "region": REGION}
        ids = provision(
            venv,
            workdir,
            "keystone",
            {
                **common,
                "glance_url": glance_url,
                "glance_password": GLANCE_PASSWORD,
                "demo_password": DEMO_PASSWORD,
                "appcred_secret": APPCRED_SECRET,
            },
        )
        glance.wait_ready(probe_path=GLANCE_PROBE)
        images = upload_test_images(venv, workdir, common)
        clouds_yaml = workdir / "clouds.yaml"
        write_clouds_yaml(clouds_yaml, keystone_url=keystone_url, appcred_id=ids["appcred_id"])
        (workdir / "startup-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
        yield OpenStackCloud(
            venv=venv,
            keystone_url=keystone_url,
            glance_url=glance_url,
            region=REGION,
            token_expiration=token_expiration,
            admin_password=ADMIN_PASSWORD,
            demo_password=DEMO_PASSWORD,
            appcred_id=ids["appcred_id"],
            appcred_secret=APPCRED_SECRET,
            clouds_yaml=clouds_yaml,
            images=images,
            workdir=workdir,
            base_env=env,
        )


def upload_test_images(
    venv: OpenStackVenv, workdir: Path, common: dict[str, str]
) -> tuple[TestImage, ...]:
    """Write each test image's bytes, upload them through Glance, check what Glance recorded."""
    data = {name: image_bytes(name, size) for name, size in TEST_IMAGE_SIZES.items()}
    files = []
    for name, content in data.items():
        path = workdir / f"{name}.raw"
        path.write_bytes(content)
        files.append({"name": name, "path": str(path)})
    answer = provision(venv, workdir, "images", {**common, "images": files})
    images = []
    for recorded in answer["images"]:
        content = data[recorded["name"]]
        image = TestImage(
            id=recorded["id"],
            name=recorded["name"],
            data=content,
            checksum=recorded["checksum"],
            os_hash_algo=recorded["os_hash_algo"],
            os_hash_value=recorded["os_hash_value"],
        )
        if recorded["status"] != "active" or recorded["size"] != len(content):
            raise subprocess.SubprocessError(f"Glance did not store {image.name}: {recorded}")
        if image.checksum != hashlib.md5(content).hexdigest():
            raise subprocess.SubprocessError(f"Glance's checksum of {image.name} differs")
        images.append(image)
    return tuple(images)
