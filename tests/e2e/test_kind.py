"""imagecache end to end on a kind cluster: chart, operator, agents, upstream, all real.

Covers (in order, sharing one installation): a single-pod request reaching Cached and the bytes
served by that agent matching the upstream image; a selector request cached on every agent with
its summary counters; evictOnDelete removing the image from the agent when the request goes;
an agent pod deleted (its emptyDir cache with it) and the request re-cached on the replacement;
`helm uninstall` leaving no workload behind. Assertions read request status and agent state,
never just "pods are Running". Skipped without kind/docker (see conftest).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.conftest import NAMESPACE, RELEASE
from tests.e2e.upstream import IMAGES, GeneratedImage

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

AGENTS = [f"{RELEASE}-imagecache-agent-0", f"{RELEASE}-imagecache-agent-1"]

# Run inside an agent container (the same image, so Python is there): ask the agent on loopback,
# with the token the chart mounted, for the image's state, the cache listing and the bytes' md5.
PROBE = """
import hashlib, json, sys, urllib.error, urllib.request
image_id = sys.argv[1]
token = open('/var/run/secrets/imagecache/agent-token/token').read().split()[0]
base = 'http://127.0.0.1:9292'
def get(path):
    request = urllib.request.Request(base + path, headers={'X-Auth-Token': token})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
status, body = get('/v2/cache/' + image_id)
state = json.loads(body).get('state') if status == 200 else None
listing = json.loads(get('/v2/cache')[1])
cached = [entry['image_id'] for entry in listing['cached_images']]
md5 = None
if image_id in cached:
    file_status, content = get('/v2/images/' + image_id + '/file')
    md5 = hashlib.md5(content).hexdigest() if file_status == 200 else None
print(json.dumps({'status': status, 'state': state, 'cached': cached,
                  'queued': listing['queued_images'], 'md5': md5}))
"""


def probe_agent(cluster: Cluster, pod: str, image: GeneratedImage) -> dict[str, Any]:
    out = cluster.kubectl(
        "exec",
        pod,
        "-n",
        NAMESPACE,
        "-c",
        "agent",
        "--",
        "python",
        "-c",
        PROBE,
        image.image_id,
        timeout=90,
    )
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def request_manifest(name: str, image: GeneratedImage, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "imagecache.dev/v1alpha1",
            "kind": "ImageCacheRequest",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"image": image.image_id, **spec},
        }
    )


def assert_cached_on(cluster: Cluster, pod: str, image: GeneratedImage) -> None:
    report = probe_agent(cluster, pod, image)
    assert report["state"] == "cached", report
    assert image.image_id in report["cached"], report
    assert report["md5"] == image.md5(), f"{pod} serves other bytes than the upstream image"


def test_single_pod_request_is_cached(cluster: Cluster, release: str) -> None:
    image = IMAGES["single"]
    cluster.apply(request_manifest("single", image, pod=AGENTS[0]), NAMESPACE)
    cluster.wait_phase("single", NAMESPACE, "Cached")
    request = cluster.get("imagecacherequest", "single", NAMESPACE)
    status = request["status"]
    pod = cluster.get("pod", AGENTS[0], NAMESPACE)
    assert status["target"]["pod"] == AGENTS[0]
    assert status["target"]["podUID"] == pod["metadata"]["uid"]
    assert status["target"]["podIP"] == pod["status"]["podIP"]
    assert status["progress"]["percent"] == 100
    assert status["progress"]["bytes"] == image.size
    cached = [c for c in status["conditions"] if c["type"] == "Cached"]
    assert cached and cached[0]["status"] == "True"
    assert_cached_on(cluster, AGENTS[0], image)
    # Only the named pod was asked.
    assert image.image_id not in probe_agent(cluster, AGENTS[1], image)["cached"]
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        "involvedObject.kind=ImageCacheRequest,involvedObject.name=single",
        "-o",
        "json",
    )
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "Cached" in reasons, reasons


def test_selector_request_caches_on_every_agent(cluster: Cluster, release: str) -> None:
    image = IMAGES["selector"]
    selector = {
        "matchLabels": {
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "agent",
        }
    }
    cluster.apply(request_manifest("selector", image, podSelector=selector), NAMESPACE)
    cluster.wait_phase("selector", NAMESPACE, "Cached")
    status = cluster.get("imagecacherequest", "selector", NAMESPACE)["status"]
    assert status["summary"]["total"] == len(AGENTS), status["summary"]
    assert status["summary"]["cached"] == len(AGENTS), status["summary"]
    assert sorted(t["pod"] for t in status["targets"]) == AGENTS
    for pod in AGENTS:
        assert_cached_on(cluster, pod, image)


def test_evict_on_delete_removes_the_image(cluster: Cluster, release: str) -> None:
    image = IMAGES["evict"]
    cluster.apply(request_manifest("evict", image, pod=AGENTS[1], evictOnDelete=True), NAMESPACE)
    cluster.wait_phase("evict", NAMESPACE, "Cached")
    request = cluster.get("imagecacherequest", "evict", NAMESPACE)
    assert request["metadata"].get("finalizers"), "evictOnDelete needs a finalizer"
    assert_cached_on(cluster, AGENTS[1], image)
    cluster.kubectl(
        "delete",
        "imagecacherequest",
        "evict",
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
        timeout=150,
    )
    assert cluster.get_or_none("imagecacherequest", "evict", NAMESPACE) is None
    report = probe_agent(cluster, AGENTS[1], image)
    assert image.image_id not in report["cached"] + report["queued"], report
    assert report["state"] in (None, "absent"), report


def test_replaced_pod_gets_the_image_again(cluster: Cluster, release: str) -> None:
    image = IMAGES["single"]
    old_uid = cluster.get("pod", AGENTS[0], NAMESPACE)["metadata"]["uid"]
    cluster.kubectl(
        "delete", "pod", AGENTS[0], "-n", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150
    )

    def replacement_uid() -> str | None:
        pod = cluster.get_or_none("pod", AGENTS[0], NAMESPACE)
        uid = pod["metadata"]["uid"] if pod else None
        return uid if uid and uid != old_uid else None

    new_uid = wait_until("the StatefulSet to recreate the agent pod", replacement_uid, timeout=180)
    cluster.kubectl(
        "wait",
        f"pod/{AGENTS[0]}",
        "-n",
        NAMESPACE,
        "--for=condition=Ready",
        "--timeout=180s",
        timeout=210,
    )

    def recached_on_replacement() -> dict[str, Any] | None:
        status = cluster.get("imagecacherequest", "single", NAMESPACE).get("status", {})
        on_new_pod = status.get("target", {}).get("podUID") == new_uid
        return status if on_new_pod and status.get("phase") == "Cached" else None

    wait_until(
        "the request to be Cached again on the replacement pod",
        recached_on_replacement,
        timeout=300,
    )
    assert_cached_on(cluster, AGENTS[0], image)


def test_uninstall_is_clean(cluster: Cluster, release: str) -> None:
    cluster.kubectl(
        "delete",
        "imagecacherequests",
        "--all",
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
        timeout=150,
    )
    cluster.helm("uninstall", release, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")

    def nothing_left() -> bool:
        out = cluster.kubectl(
            "get",
            "all,secrets,serviceaccounts,networkpolicies",
            "-n",
            NAMESPACE,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        )
        return not out.strip()

    wait_until("every object of the release to be gone", nothing_left, timeout=180)
    leftover = cluster.kubectl(
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    )
    assert not leftover.strip(), leftover
    # The CRD stays (Helm never deletes crds/), so existing requests would survive a reinstall.
    assert cluster.get_or_none("crd", "imagecacherequests.imagecache.dev", "default")
