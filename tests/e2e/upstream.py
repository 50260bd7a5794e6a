"""The in-cluster upstream the e2e tests cache from, and the images it serves.

An init container (the imagecache image's own Python) writes each image as deterministic
pseudo-random bytes into an emptyDir; the main container serves them with `python -m
http.server`. The tests compute the same bytes locally, so what the agents serve can be checked
byte for byte without trusting the upstream.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image: its id, size and the seed of its bytes."""

    image_id: str
    size: int
    seed: int

    def content(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)

    def md5(self) -> str:
        return hashlib.md5(self.content(), usedforsecurity=False).hexdigest()


# One image per test, so no test depends on what another cached or removed.
IMAGES = {
    "single": GeneratedImage("e2e-single-0001", 1024 * 1024, 1),
    "selector": GeneratedImage("e2e-selector-0002", 2 * 1024 * 1024, 2),
    "evict": GeneratedImage("e2e-evict-0003", 512 * 1024, 3),
    "replace": GeneratedImage("e2e-replace-0004", 768 * 1024, 4),
    "failover": GeneratedImage("e2e-failover-0005", 640 * 1024, 5),
    "policy": GeneratedImage("e2e-policy-0006", 256 * 1024, 6),
    "uninstall": GeneratedImage("e2e-uninstall-0007", 128 * 1024, 7),
    "perpod": GeneratedImage("e2e-perpod-0008", 384 * 1024, 8),
}

GENERATE = (
    "import json, random, sys\n"
    "for image_id, size, seed in json.loads(sys.argv[1]):\n"
    "    with open('/data/' + image_id, 'wb') as f:\n"
    "        f.write(random.Random(seed).randbytes(size))\n"
)


def upstream_manifest(image: str) -> str:
    """Deployment + Service `e2e-upstream` (port 8000), restricted pod security, as JSON."""
    specs = json.dumps([[i.image_id, i.size, i.seed] for i in IMAGES.values()])
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = [{"name": "data", "mountPath": "/data"}]
    labels = {"app": "e2e-upstream"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "e2e-upstream", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"fsGroup": 65532},
                    "initContainers": [
                        {
                            "name": "generate",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-c", GENERATE, specs],
                            "securityContext": security,
                            "volumeMounts": mounts,
                        }
                    ],
                    "containers": [
                        {
                            "name": "serve",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": [
                                "python",
                                "-m",
                                "http.server",
                                "8000",
                                "--directory",
                                "/data",
                            ],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
                            "securityContext": security,
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "e2e-upstream", "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment, service]})
