"""imagecache end to end on a kind cluster: chart, operator, agents, upstream, all real.

Covers (one shared installation, but each test creates its own requests on its own image and
deletes them, so any test runs alone under `-k`): a single-pod request reaching Cached and the
bytes served by that agent matching the upstream image; the chart's per-pod agent credentials (a
request Cached with them; a token of the operator's account minted for another pod's audience,
or one of another account, refused by the agent; the shared token still read by the probes); a
selector request cached on every agent
with its summary counters; evictOnDelete removing the image from the agent when the request goes;
an agent pod deleted (its emptyDir cache with it) and the request re-cached on the replacement;
the elected operator force-killed, another replica taking the Lease and a new request still
reaching Cached; the chart's NetworkPolicy letting the operator reach the agents and refusing
another pod (on a CNI shown to enforce policies); `helm uninstall` of a release of its own leaving
nothing behind. Assertions read request status and agent state, never just "pods are Running".
Skipped without kind/docker (see conftest).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.e2e.cluster import REPO, Cluster, wait_until
from tests.e2e.conftest import IMAGE, NAMESPACE, RELEASE, Requests, install
from tests.e2e.upstream import IMAGES, GeneratedImage

# func_only: the limit covers the test body, not the session fixtures (cluster, image, release)
# that the first test sets up; those are bounded by each command's own deadline (see conftest).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600, func_only=True)]

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


def assert_cached_on(cluster: Cluster, pod: str, image: GeneratedImage) -> None:
    report = probe_agent(cluster, pod, image)
    assert report["state"] == "cached", report
    assert image.image_id in report["cached"], report
    assert report["md5"] == image.md5(), f"{pod} serves other bytes than the upstream image"


def test_single_pod_request_is_cached(cluster: Cluster, cache_requests: Requests) -> None:
    image = IMAGES["single"]
    cache_requests.create("single", image, pod=AGENTS[0])
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


OPERATOR_ACCOUNT = f"{RELEASE}-imagecache-operator"
AGENT_ACCOUNT = f"{RELEASE}-imagecache-agent"

# Run inside an agent container: GET /v2/cache on loopback with the token read from stdin (never
# on a command line); print the HTTP status.
TOKEN_PROBE = """
import sys, urllib.error, urllib.request
token = sys.stdin.read().strip()
request = urllib.request.Request('http://127.0.0.1:9292/v2/cache', headers={'X-Auth-Token': token})
try:
    with urllib.request.urlopen(request, timeout=20) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def status_with_token(cluster: Cluster, pod: str, token: str) -> int:
    out = cluster.kubectl(
        "exec",
        "-i",
        pod,
        "-n",
        NAMESPACE,
        "-c",
        "agent",
        "--",
        "python",
        "-c",
        TOKEN_PROBE,
        input_text=token,
        timeout=90,
    )
    return int(out.strip().splitlines()[-1])


def mint_token(cluster: Cluster, account: str, audience: str) -> str:
    """A TokenRequest token of `account` for `audience`, as `kubectl create token` makes it."""
    return cluster.kubectl(
        "create",
        "token",
        account,
        "-n",
        NAMESPACE,
        "--audience",
        audience,
        "--duration",
        "10m",
    ).strip()


def test_per_pod_credentials_cache_and_work_for_their_pod_only(
    cluster: Cluster, cache_requests: Requests
) -> None:
    """The chart's default: the operator sends each agent a token minted for that pod alone."""
    operator = cluster.get("deployment", OPERATOR_ACCOUNT, NAMESPACE)
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("IMAGECACHE_OPERATOR_AGENT_AUTH") == "kubernetes", env
    # In this mode the operator sends only per-pod tokens: Cached means the agent's
    # TokenReview (its ClusterRole, its POD_UID) and the operator's TokenRequest both worked.
    image = IMAGES["perpod"]
    cache_requests.create("perpod", image, pod=AGENTS[0])
    cluster.wait_phase("perpod", NAMESPACE, "Cached")
    assert_cached_on(cluster, AGENTS[0], image)

    uids = {pod: cluster.get("pod", pod, NAMESPACE)["metadata"]["uid"] for pod in AGENTS}
    own = mint_token(cluster, OPERATOR_ACCOUNT, f"imagecache.dev/agent/{uids[AGENTS[0]]}")
    other_pods = mint_token(cluster, OPERATOR_ACCOUNT, f"imagecache.dev/agent/{uids[AGENTS[1]]}")
    not_operator = mint_token(cluster, AGENT_ACCOUNT, f"imagecache.dev/agent/{uids[AGENTS[0]]}")
    assert status_with_token(cluster, AGENTS[0], own) == 200, "the operator's token for this pod"
    assert status_with_token(cluster, AGENTS[0], other_pods) == 401, "minted for another pod"
    assert status_with_token(cluster, AGENTS[1], other_pods) == 200, "works at its own pod"
    assert status_with_token(cluster, AGENTS[0], not_operator) == 401, "not the operator's"


def test_selector_request_caches_on_every_agent(cluster: Cluster, cache_requests: Requests) -> None:
    image = IMAGES["selector"]
    selector = {
        "matchLabels": {
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "agent",
        }
    }
    cache_requests.create("selector", image, podSelector=selector)
    cluster.wait_phase("selector", NAMESPACE, "Cached")
    status = cluster.get("imagecacherequest", "selector", NAMESPACE)["status"]
    assert status["summary"]["total"] == len(AGENTS), status["summary"]
    assert status["summary"]["cached"] == len(AGENTS), status["summary"]
    assert sorted(t["pod"] for t in status["targets"]) == AGENTS
    for pod in AGENTS:
        assert_cached_on(cluster, pod, image)


def test_evict_on_delete_removes_the_image(cluster: Cluster, cache_requests: Requests) -> None:
    image = IMAGES["evict"]
    cache_requests.create("evict", image, pod=AGENTS[1], evictOnDelete=True)
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


def test_replaced_pod_gets_the_image_again(cluster: Cluster, cache_requests: Requests) -> None:
    image = IMAGES["replace"]
    cache_requests.create("replace", image, pod=AGENTS[0])
    cluster.wait_phase("replace", NAMESPACE, "Cached")
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
        status = cluster.get("imagecacherequest", "replace", NAMESPACE).get("status", {})
        on_new_pod = status.get("target", {}).get("podUID") == new_uid
        return status if on_new_pod and status.get("phase") == "Cached" else None

    wait_until(
        "the request to be Cached again on the replacement pod",
        recached_on_replacement,
        timeout=300,
    )
    assert_cached_on(cluster, AGENTS[0], image)


LEASE = f"{RELEASE}-imagecache-operator"


def lease_holder(cluster: Cluster) -> str | None:
    lease = cluster.get_or_none("lease", LEASE, NAMESPACE)
    holder = (lease or {}).get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None


def operator_pods(cluster: Cluster) -> list[str]:
    out = cluster.kubectl(
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    )
    return out.split()


def pod_of(holder: str) -> str:
    """The pod behind a Lease identity: the pod name plus a random suffix (-xxxxxxxx)."""
    return holder.rsplit("-", 1)[0]


def test_leader_failover_keeps_caching(cluster: Cluster, cache_requests: Requests) -> None:
    def two_running() -> list[str] | None:
        pods = operator_pods(cluster)
        return pods if len(pods) == 2 else None

    pods = wait_until("two running operator replicas", two_running, timeout=180)
    holder = wait_until("a leader in the Lease", lambda: lease_holder(cluster), timeout=60)
    leader = pod_of(holder)
    assert leader in pods, f"Lease holder {holder} is no running operator pod {pods}"
    killed_at = time.monotonic()
    cluster.kubectl(
        "delete", "pod", leader, "-n", NAMESPACE, "--grace-period=0", "--force", timeout=60
    )

    def new_holder() -> str | None:
        current = lease_holder(cluster)
        return current if current and pod_of(current) != leader else None

    successor = wait_until("another replica to take the Lease", new_holder, timeout=60)
    takeover = time.monotonic() - killed_at
    assert pod_of(successor) in operator_pods(cluster), successor
    cache_requests.create("failover", IMAGES["failover"], pod=AGENTS[1])
    cluster.wait_phase("failover", NAMESPACE, "Cached", timeout=120)
    cached = time.monotonic() - killed_at
    print(
        f"failover: Lease taken {takeover:.1f}s after the kill, new request Cached at {cached:.1f}s"
    )
    # Lease 15 s + retry 2 s, with room for a loaded CI runner.
    assert takeover <= 45, f"takeover took {takeover:.1f}s"
    assert_cached_on(cluster, AGENTS[1], IMAGES["failover"])


# Run in a pod: try one TCP connection and say how it went.
TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print('connected')
except socket.timeout:
    print('timeout')
except ConnectionRefusedError:
    print('refused')
except OSError as error:
    print('error', error)
"""


def tcp_from_new_pod(cluster: Cluster, name: str, host: str, port: int) -> str:
    """Connect from a fresh, unlabelled pod (none of the chart's labels) and return the outcome."""
    cluster.kubectl(
        "run",
        name,
        "-n",
        NAMESPACE,
        f"--image={IMAGE}",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--labels=e2e-probe=true",
        "--command",
        "--",
        "python",
        "-c",
        TCP_PROBE,
        host,
        str(port),
    )
    try:
        cluster.kubectl(
            "wait",
            f"pod/{name}",
            "-n",
            NAMESPACE,
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=120s",
            timeout=150,
        )
        return cluster.kubectl("logs", name, "-n", NAMESPACE).strip()
    finally:
        cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--wait=false", check=False)


def tcp_from_operator(cluster: Cluster, host: str, port: int) -> str:
    return cluster.kubectl(
        "exec",
        f"deployment/{RELEASE}-imagecache-operator",
        "-n",
        NAMESPACE,
        "-c",
        "operator",
        "--",
        "python",
        "-c",
        TCP_PROBE,
        host,
        str(port),
        timeout=60,
    ).strip()


def policies_are_enforced(cluster: Cluster) -> bool:
    """Deny all ingress to the upstream for a moment: does a new pod still get through?"""
    canary = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "e2e-canary-deny"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "e2e-upstream"}},
            "policyTypes": ["Ingress"],
        },
    }
    upstream_ip = cluster.kubectl(
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app=e2e-upstream",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ).strip()
    cluster.apply(json.dumps(canary), NAMESPACE)
    try:
        return tcp_from_new_pod(cluster, "e2e-canary-probe", upstream_ip, 8000) != "connected"
    finally:
        cluster.kubectl("delete", "networkpolicy", "e2e-canary-deny", "-n", NAMESPACE, check=False)


def set_network_policy(cluster: Cluster, enabled: bool) -> None:
    cluster.helm(
        "upgrade",
        RELEASE,
        str(REPO / "charts" / "imagecache"),
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        "--set",
        f"networkPolicy.enabled={str(enabled).lower()}",
        "--wait",
        "--timeout",
        "3m",
    )


@pytest.mark.timeout(900, func_only=True)
def test_network_policy_admits_the_operator_and_refuses_other_pods(
    cluster: Cluster, cache_requests: Requests
) -> None:
    if not policies_are_enforced(cluster):
        reason = (
            "this cluster's CNI does not enforce NetworkPolicy (a deny-all canary let a pod "
            "through); kind >= 0.24 enforces it with kindnet where the kernel has nft_queue"
        )
        if os.environ.get("IMAGECACHE_E2E_REQUIRE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    set_network_policy(cluster, True)
    try:
        agent_ip = cluster.get("pod", AGENTS[0], NAMESPACE)["status"]["podIP"]
        assert tcp_from_operator(cluster, agent_ip, 9292) == "connected"
        outcome = tcp_from_new_pod(cluster, "e2e-policy-probe", agent_ip, 9292)
        assert outcome in ("timeout", "refused"), f"another pod reached the agent: {outcome}"
        # The operator's real traffic passes: a request is cached through the policy.
        cache_requests.create("policy", IMAGES["policy"], pod=AGENTS[0])
        cluster.wait_phase("policy", NAMESPACE, "Cached")
        assert_cached_on(cluster, AGENTS[0], IMAGES["policy"])
    finally:
        set_network_policy(cluster, False)


UNINSTALL_NAMESPACE = "imagecache-e2e-uninstall"
UNINSTALL_RELEASE = "gone"


@pytest.mark.timeout(900, func_only=True)
def test_uninstall_is_clean(cluster: Cluster, image: str, upstream: str) -> None:
    """A release of its own (the shared one stays for the other tests), with a request on it."""
    install(
        cluster,
        UNINSTALL_RELEASE,
        UNINSTALL_NAMESPACE,
        image,
        upstream,
        "--set",
        "agent.replicas=1",
        "--set",
        "operator.replicas=1",
        "--set",
        "operator.settings.leaderElection=false",
    )
    try:
        own = Requests(cluster, UNINSTALL_NAMESPACE)
        own.create(
            "uninstall",
            IMAGES["uninstall"],
            pod=f"{UNINSTALL_RELEASE}-imagecache-agent-0",
            evictOnDelete=True,
        )
        cluster.wait_phase("uninstall", UNINSTALL_NAMESPACE, "Cached")
        own.delete_all()
        assert cluster.get_or_none("imagecacherequest", "uninstall", UNINSTALL_NAMESPACE) is None
        cluster.helm(
            "uninstall",
            UNINSTALL_RELEASE,
            "--namespace",
            UNINSTALL_NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        )

        def nothing_left() -> bool:
            out = cluster.kubectl(
                "get",
                "all,secrets,serviceaccounts,networkpolicies,roles,rolebindings,"
                "poddisruptionbudgets",
                "-n",
                UNINSTALL_NAMESPACE,
                "-l",
                f"app.kubernetes.io/instance={UNINSTALL_RELEASE}",
                "-o",
                "name",
            )
            return not out.strip()

        wait_until("every object of the release to be gone", nothing_left, timeout=180)
        leftover = cluster.kubectl(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            f"app.kubernetes.io/instance={UNINSTALL_RELEASE}",
            "-o",
            "name",
        )
        assert not leftover.strip(), leftover
        # The CRD stays (Helm never deletes crds/), so existing requests survive a reinstall.
        assert cluster.get_or_none("crd", "imagecacherequests.imagecache.dev", "default")
    finally:
        cluster.kubectl(
            "delete",
            "namespace",
            UNINSTALL_NAMESPACE,
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )
