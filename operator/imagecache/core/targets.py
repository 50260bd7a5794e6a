"""Which pods a request targets, and how the target set changed (SPEC §4.1 items 1, 4, 5).

Pure: pods arrive as plain `PodInfo` values (built from Kubernetes pod bodies by
`pod_info`), selectors as the ``metav1.LabelSelector`` mapping. Nothing here talks to the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

PORT_ANNOTATION = "imagecache.dev/port"

Readiness = Literal["Ready", "PodNotFound", "PodNotReady"]


@dataclass(frozen=True)
class PodInfo:
    """What the operator needs to know about one pod."""

    namespace: str
    name: str
    uid: str
    ip: str | None = None
    node_name: str | None = None
    phase: str | None = None
    deleting: bool = False
    ready: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetDiff:
    """Targets (by pod name) added, dropped, replaced (same name, new uid or IP), kept."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


def pod_info(body: Mapping[str, Any]) -> PodInfo:
    """A `PodInfo` from a raw pod body (missing fields become None or empty)."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return PodInfo(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        ip=status.get("podIP") or None,
        node_name=spec.get("nodeName") or None,
        phase=status.get("phase") or None,
        deleting=bool(metadata.get("deletionTimestamp")),
        ready=_condition_true(status, "Ready"),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
    )


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    conditions = status.get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def pod_readiness(*, pod: PodInfo | None) -> Readiness:
    """``Ready`` for a Running pod with an IP, condition ``Ready=True``, not being deleted.

    A pod whose containers are not ready yet (the agent still starting) is not a target: asking
    it would only fail and warn at every pod start.
    """
    if pod is None:
        return "PodNotFound"
    if pod.phase != "Running" or not pod.ip or pod.deleting or not pod.ready:
        return "PodNotReady"
    return "Ready"


def selector_matches(*, selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: all ``matchLabels`` and ``matchExpressions`` hold.

    An empty selector matches every pod, as it does in Kubernetes.
    """
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key = expression["key"]
        operator = expression["operator"]
        values = set(expression.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def select_targets(*, pods: Iterable[PodInfo], selector: Mapping[str, Any]) -> list[PodInfo]:
    """The selector form's targets: matching pods that are ready, sorted by name."""
    chosen = [
        pod
        for pod in pods
        if pod_readiness(pod=pod) == "Ready"
        and selector_matches(selector=selector, labels=pod.labels)
    ]
    return sorted(chosen, key=lambda pod: pod.name)


def agent_port(*, spec_port: int | None, pod: PodInfo, default: int) -> int:
    """``spec.port``, else the pod's ``imagecache.dev/port`` annotation, else the default.

    An annotation that is not a port number (1-65535) is ignored.
    """
    if spec_port:
        return spec_port
    raw = pod.annotations.get(PORT_ANNOTATION, "").strip()
    if raw.isdigit() and 1 <= int(raw) <= 65535:
        return int(raw)
    return default


def agent_endpoint(*, ip: str, port: int) -> str:
    """Base URL of the agent on a pod (IPv6 addresses bracketed)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def diff_targets(
    *, previous: Sequence[Mapping[str, Any]], current: Sequence[PodInfo]
) -> TargetDiff:
    """Compare the targets recorded in status (``pod``/``podUID``/``podIP``) with live pods."""
    before = {str(entry.get("pod")): entry for entry in previous if entry.get("pod")}
    now = {pod.name: pod for pod in current}
    added = tuple(sorted(name for name in now if name not in before))
    removed = tuple(sorted(name for name in before if name not in now))
    replaced: list[str] = []
    kept: list[str] = []
    for name in sorted(set(before) & set(now)):
        if is_replaced(recorded=before[name], pod=now[name]):
            replaced.append(name)
        else:
            kept.append(name)
    return TargetDiff(added=added, removed=removed, replaced=tuple(replaced), kept=tuple(kept))


def is_replaced(*, recorded: Mapping[str, Any], pod: PodInfo) -> bool:
    """True when a recorded target names this pod but with another uid or IP."""
    uid = recorded.get("podUID")
    ip = recorded.get("podIP")
    return bool((uid and uid != pod.uid) or (ip and pod.ip and ip != pod.ip))


Action = Literal["put", "report", "keep"]


def target_action(
    *, agent_state: str, previous_phase: str | None, put_pending: bool, recheck_due: bool
) -> Action:
    """What to do with one ready target, given the agent's view of the image.

    * ``report``: the agent's view is the truth, map it to the status;
    * ``put``: (re-)queue the image on the agent;
    * ``keep``: keep the target's current state (a report older than our own ``PUT``, or a
      failure that is not yet due for a new attempt).

    `put_pending` is true when this operator queued the image after the report was fetched
    (the report cannot show it yet); `recheck_due` when a terminal state's recheck interval has
    passed. A failed image is re-queued on first contact (a fresh request), or when due.
    """
    if agent_state in ("queued", "caching", "cached"):
        return "report"
    if put_pending:
        return "keep"
    if agent_state == "failed":
        if previous_phase in (None, "Pending") or (previous_phase == "Failed" and recheck_due):
            return "put"
        return "report"
    if previous_phase == "Failed" and not recheck_due:
        return "keep"
    return "put"
