"""A real Glance 33 (glance-api) on sqlite under uWSGI, authenticating with Keystone.

One filesystem store, the image cache enabled (paste flavor `keystone+cachemanagement`, so
`/v2/cache` is Glance's own cache API, for side-by-side comparison with the agent), and the
node reference URL set to its own address (Glance 33's centralized cache driver needs it).
"""

from __future__ import annotations

from pathlib import Path

from tests.openstack.processes import UwsgiService, openstack_api, run_command
from tests.openstack.venv import OpenStackVenv

GLANCE_PROBE = "/versions"

GLANCE_STORE_CONF = """\
[DEFAULT]
use_stderr = true
enabled_backends = fs:file
image_cache_dir = {workdir}/cache
image_cache_max_size = {cache_max_size}
worker_self_reference_url = {url}
public_endpoint = {url}

[database]
connection = sqlite:///{workdir}/glance.db

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {workdir}/images

[os_glance_staging_store]
filesystem_store_datadir = {workdir}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {workdir}/tasks

"""
"""The sections every Glance started here shares (tests and bench/glance33.py): one file store,
a local image cache of ``{cache_max_size}`` bytes (each user fills it in), sqlite."""

GLANCE_API_CONF = (
    GLANCE_STORE_CONF.replace("{cache_max_size}", "104857600")
    + """\
[paste_deploy]
flavor = keystone+cachemanagement
config_file = {paste_ini}

[keystone_authtoken]
www_authenticate_uri = {keystone_url}
auth_url = {keystone_url}
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
username = glance
password = {glance_password}
region_name = {region}

[oslo_concurrency]
lock_path = {workdir}/locks

[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
"""
)


def glance_api(
    venv: OpenStackVenv, *, conf: Path, port: int, workdir: Path, env: dict[str, str]
) -> UwsgiService:
    """Glance's API for the configuration `conf` in `workdir`: its database created, the
    uWSGI service built (not started: `start` or `spawn` it)."""
    run_command([str(venv.bin("glance-manage")), "--config-file", str(conf), "db_sync"], env=env)
    return openstack_api(venv, "glance", port=port, workdir=workdir, env=env)


def spawn_glance(
    venv: OpenStackVenv,
    workdir: Path,
    *,
    port: int,
    env: dict[str, str],
    keystone_url: str,
    glance_password: str,
    region: str,
) -> UwsgiService:
    """Configure Glance in `workdir`, create its database, spawn it on `port`.

    Glance needs Keystone only when a request comes, so it can load while Keystone is set up;
    the caller waits for it with `wait_ready(probe_path=GLANCE_PROBE)`.
    """
    for folder in ("cache", "images", "staging", "tasks", "locks"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    conf = workdir / "glance-api.conf"
    conf.write_text(
        GLANCE_API_CONF.format(
            workdir=workdir,
            url=url,
            paste_ini=venv.path / "etc" / "glance" / "glance-api-paste.ini",
            keystone_url=keystone_url,
            glance_password=glance_password,
            region=region,
        )
    )
    service = glance_api(venv, conf=conf, port=port, workdir=workdir, env=env)
    service.spawn()
    return service
