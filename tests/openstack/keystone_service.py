"""A real Keystone 30 on sqlite under uWSGI: configure, set up its database and keys, serve.

Fernet tokens whose lifetime is `token_expiration` seconds; an in-process dogpile cache so a
token validation does not cost a second of sqlite work (hence a single uWSGI process, whose
threads share that cache); bcrypt at its lowest cost so password
authentication stays fast. The bootstrap admin (`admin` in project `admin`, role `admin`) and
the identity endpoint in `region` come from `keystone-manage bootstrap` (run with the other
set-up steps in one process by keystone_setup.py).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path

from tests.openstack.processes import UwsgiService, openstack_api, run_command
from tests.openstack.venv import OpenStackVenv

SETUP_SCRIPT = Path(__file__).with_name("keystone_setup.py")

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
    request = {
        "config_file": str(conf),
        "url": f"http://127.0.0.1:{port}/v3",
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "group": grp.getgrgid(os.getgid()).gr_name,
        "admin_password": admin_password,
        "region": region,
    }
    request_path = workdir / "keystone-setup.json"
    request_path.write_text(json.dumps(request))
    run_command([str(venv.python), "-I", str(SETUP_SCRIPT), str(request_path)], env=env)
    # One process (as openstack_api runs every service): the dogpile memory cache lives in a
    # process, so with two a catalog or role change made through one worker stays invisible
    # to the other's cached copy.
    service = openstack_api(venv, "keystone", port=port, workdir=workdir, env=env)
    service.start(probe_path="/v3")
    return service
