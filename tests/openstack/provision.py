"""Create the test users, projects, catalog entries and images, with openstacksdk.

Runs with the OpenStack venv's Python (which has openstacksdk), not the test venv's:
`python provision.py keystone|images REQUEST.json` prints one JSON object on stdout.

- `keystone`: as the bootstrap admin, creates the `service` and `demo` projects, the `glance`
  service user (admin on `service`), the member-only user `demo` (member on `demo`), the image
  service with its public/internal/admin endpoints, and an application credential of `admin`.
- `images`: as admin, uploads each file as a public raw/bare image through the Glance API
  (create, then PUT of the bytes) and answers what Glance recorded for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import openstack


def connect(request: dict[str, Any]) -> Any:
    return openstack.connect(
        auth_url=request["auth_url"],
        username="admin",
        password=request["admin_password"],
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=request["region"],
        interface="public",
        identity_api_version="3",
    )


def provision_keystone(request: dict[str, Any]) -> dict[str, Any]:
    conn = connect(request)
    identity = conn.identity
    roles = {name: identity.find_role(name, ignore_missing=False) for name in ("admin", "member")}
    service_project = identity.create_project(name="service", domain_id="default")
    demo_project = identity.create_project(name="demo", domain_id="default")
    glance_user = identity.create_user(
        name="glance",
        password=request["glance_password"],
        domain_id="default",
        default_project_id=service_project.id,
    )
    identity.assign_project_role_to_user(service_project, glance_user, roles["admin"])
    demo_user = identity.create_user(
        name="demo",
        password=request["demo_password"],
        domain_id="default",
        default_project_id=demo_project.id,
    )
    identity.assign_project_role_to_user(demo_project, demo_user, roles["member"])
    service = identity.create_service(name="glance", type="image", enabled=True)
    for interface in ("public", "internal", "admin"):
        identity.create_endpoint(
            service_id=service.id,
            interface=interface,
            url=request["glance_url"],
            region_id=request["region"],
        )
    credential = identity.create_application_credential(
        user=conn.current_user_id,
        name="imagecache-agent",
        secret=request["appcred_secret"],
    )
    return {
        "service_project_id": service_project.id,
        "demo_project_id": demo_project.id,
        "glance_user_id": glance_user.id,
        "demo_user_id": demo_user.id,
        "image_service_id": service.id,
        "appcred_id": credential.id,
    }


def upload_images(request: dict[str, Any]) -> dict[str, Any]:
    conn = connect(request)
    uploaded = []
    for item in request["images"]:
        image = conn.image.create_image(
            name=item["name"],
            data=Path(item["path"]).read_bytes(),
            disk_format="raw",
            container_format="bare",
            visibility="public",
            disable_vendor_agent=False,
            allow_duplicates=True,
            validate_checksum=True,
            wait=True,
            timeout=60,
        )
        image = conn.image.get_image(image.id)
        uploaded.append(
            {
                "id": image.id,
                "name": image.name,
                "status": image.status,
                "size": image.size,
                "checksum": image.checksum,
                "os_hash_algo": image.hash_algo,
                "os_hash_value": image.hash_value,
            }
        )
    return {"images": uploaded}


def main() -> None:
    action, request_path = sys.argv[1], sys.argv[2]
    request = json.loads(Path(request_path).read_text())
    actions = {"keystone": provision_keystone, "images": upload_images}
    print(json.dumps(actions[action](request)))


if __name__ == "__main__":
    main()
