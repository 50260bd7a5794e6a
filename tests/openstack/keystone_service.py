"""A real Keystone 30 on sqlite under uWSGI: configure, set up its database and keys, serve.

Fernet tokens whose lifetime is `token_expiration` seconds; an in-process dogpile cache so a
token validation does not cost a second of sqlite work; bcrypt at its lowest cost so password
authentication stays fast. The bootstrap admin (`admin` in project `admin`, role `admin`) and
the identity endpoint in `region` come from `keystone-manage bootstrap`.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from tests.openstack.processes import UwsgiService, run_command
from tests.openstack.venv import OpenStackVenv

KEYSTONE_CONF = """\
[DEFAULT]
use_stderr = true

[database]
connection = sqlite:///{workdir}/keystone.db

[token]
provider = fernet
expiration = {token_expiration}

[fernet_tokens]
key_repository = {workdir}/fernet-keys

[fernet_receipts]
key_repository = {workdir}/fernet-keys

[credential]
key_repository = {workdir}/credential-keys

[identity]
password_hash_rounds = 4

[cache]
enabled = true
backend = dogpile.cache.memory

[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
"""


def start_keystone(
    venv: OpenStackVenv,
    workdir: Path,
    *,
    port: int,
    env: dict[str, str],
    admin_password: str,
    region: str,
    token_expiration: int,
) -> UwsgiService:
    """Configure and bootstrap Keystone in `workdir`, serve it on `port`; started service."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "keystone.conf"
    conf.write_text(KEYSTONE_CONF.format(workdir=workdir, token_expiration=token_expiration))
    url = f"http://127.0.0.1:{port}/v3"
    manage = [str(venv.bin("keystone-manage")), "--config-file", str(conf)]
    owner = [
        "--keystone-user", pwd.getpwuid(os.getuid()).pw_name,
        "--keystone-group", grp.getgrgid(os.getgid()).gr_name,
    ]  # fmt: skip
    run_command([*manage, "db_sync"], env=env)
    run_command([*manage, "fernet_setup", *owner], env=env)
    run_command([*manage, "credential_setup", *owner], env=env)
    run_command(
        [
            *manage, "bootstrap",
            "--bootstrap-password", admin_password,
            "--bootstrap-region-id", region,
            "--bootstrap-admin-url", url,
            "--bootstrap-internal-url", url,
            "--bootstrap-public-url", url,
        ],
        env=env,
    )  # fmt: skip
    service = UwsgiService(
        name="keystone",
        uwsgi=venv.bin("uwsgi"),
        venv=venv.path,
        module="keystone.wsgi.api:application",
        port=port,
        lazy_apps=False,  # load once, then fork: halves the start-up work on 2 cores
        log_path=workdir / "keystone.log",
        env={**env, "OS_KEYSTONE_CONFIG_DIR": str(workdir)},
    )
    service.start(probe_path="/v3")
    return service
