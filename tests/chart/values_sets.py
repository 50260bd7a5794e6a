"""Named value sets the chart tests render, one per deployment shape the chart supports."""

from __future__ import annotations

from typing import Any

HTTP_UPSTREAM = "http://upstream.imagecache-system.svc:8000/"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "agent-daemonset": {
        "agent.enabled": True,
        "agent.upstream.url": HTTP_UPSTREAM,
    },
    "agent-statefulset-pvc": {
        "agent.enabled": True,
        "agent.kind": "StatefulSet",
        "agent.replicas": 3,
        "agent.cache": {
            "type": "pvc",
            "size": "50Gi",
            "maxSize": "40G",
            "storageClassName": "fast",
            "accessModes": ["ReadWriteOnce"],
            "hostPath": "/var/lib/imagecache",
        },
        "agent.upstream": {
            "url": "glance+https://glance-api.openstack:9292",
            "tokenSecret": "glance-token",
            "tokenSecretKey": "token",
        },
    },
    "agent-hostpath": {
        "agent.enabled": True,
        "agent.cache.type": "hostPath",
        "agent.cache.hostPath": "/srv/imagecache",
        "agent.upstream.url": "file:///images",
        "agent.extraVolumes": [{"name": "images", "hostPath": {"path": "/srv/images"}}],
        "agent.extraVolumeMounts": [{"name": "images", "mountPath": "/images", "readOnly": True}],
    },
    "network-policy": {
        "agent.enabled": True,
        "agent.upstream.url": HTTP_UPSTREAM,
        "networkPolicy.enabled": True,
        "networkPolicy.consumers": [
            {"podSelector": {"matchLabels": {"app": "nova-compute"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        ],
    },
    "existing-secret": {
        "agent.enabled": True,
        "agent.upstream.url": HTTP_UPSTREAM,
        "agentToken.existingSecret": "my-agent-token",
        "agentToken.secretKey": "agent-token",
    },
    "watch-namespaces": {
        "watchNamespaces": ["openstack", "glance-staging"],
    },
    "single-operator": {
        "operator.replicas": 1,
        "operator.settings.leaderElection": False,
    },
    "election-namespaced": {
        "operator.settings.leaseName": "imagecache-leader",
        "watchNamespaces": ["openstack", "glance-staging"],
    },
    "openstack-keystone": {
        "agent.enabled": True,
        "agent.auth": "keystone",
        "operator.settings.agentAuth": "token-file",
        "agent.upstream.url": "glance://",
        "agent.openstack": {
            "cloud": "glance-cache",
            "cloudsSecret": "imagecache-clouds",
            "cloudsSecretKey": "clouds.yaml",
        },
        "agent.selfUrl": "http://imagecache-agent.openstack.svc:9292",
        "agent.settings.keystoneRoles": "admin,image-cache",
    },
    "monitoring": {
        "agent.enabled": True,
        "agent.upstream.url": HTTP_UPSTREAM,
        "metrics.serviceMonitor.enabled": True,
        "metrics.serviceMonitor.labels": {"release": "kube-prometheus-stack"},
        "metrics.serviceMonitor.relabelings": [
            {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}
        ],
        "metrics.prometheusRule.enabled": True,
        "metrics.dashboards.enabled": True,
    },
    "ipv4-only": {
        "agent.enabled": True,
        "agent.upstream.url": HTTP_UPSTREAM,
        "agent.listenHost": "0.0.0.0",
        "operator.settings.metricsHost": "0.0.0.0",
    },
}
