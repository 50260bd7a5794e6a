"""Drive a real cluster from tests: kind, docker, helm and kubectl as checked, bounded commands.

Owns: finding the tools (.tools/bin first, then PATH), running each command with a time limit and
failing loudly with its output when it exits non-zero, polling a condition with a deadline, and
dumping what a human needs when a test fails (objects, describe, events, logs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class CommandError(AssertionError):
    """A command exited non-zero or ran out of time; the message carries its output."""


def find_tool(name: str) -> str | None:
    path = os.pathsep.join([str(REPO / ".tools" / "bin"), os.environ.get("PATH", "")])
    return shutil.which(name, path=path)


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one command with a deadline; raise CommandError on failure unless check=False."""
    try:
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CommandError(f"timed out after {timeout}s: {' '.join(args)}") from error
    if check and result.returncode != 0:
        raise CommandError(
            f"exit {result.returncode}: {' '.join(args)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def wait_until(
    what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 2.0
) -> T:
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Cluster:
    """One kind cluster reached through a kubeconfig file, and the tools to talk to it."""

    name: str
    kubeconfig: Path
    kubectl_bin: str
    helm_bin: str
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, timeout: float = 60, input_text: str | None = None, check: bool = True
    ) -> str:
        return run(
            [self.kubectl_bin, *args],
            timeout=timeout,
            env=self.env,
            input_text=input_text,
            check=check,
        ).stdout

    def helm(self, *args: str, timeout: float = 360) -> str:
        return run([self.helm_bin, *args], timeout=timeout, env=self.env).stdout

    def apply(self, manifest: str, namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return found

    def get_or_none(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        out = self.kubectl(
            "get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found", check=False
        )
        return json.loads(out) if out.strip() else None

    def wait_phase(self, name: str, namespace: str, phase: str, timeout: int = 240) -> None:
        """`kubectl wait` for an ImageCacheRequest's status.phase (bounded)."""
        self.kubectl(
            "wait",
            f"imagecacherequest/{name}",
            "-n",
            namespace,
            f"--for=jsonpath={{.status.phase}}={phase}",
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )

    def diagnostics(self, namespace: str) -> str:
        """Everything useful after a failure; never raises."""
        sections: list[str] = []
        commands = [
            [
                "get",
                "all,imagecacherequests,networkpolicies,secrets",
                "-n",
                namespace,
                "-o",
                "wide",
            ],
            ["get", "imagecacherequests", "-n", namespace, "-o", "yaml"],
            ["describe", "imagecacherequests", "-n", namespace],
            ["describe", "pods", "-n", namespace],
            ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
            [
                "logs",
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/component=operator",
                "--tail=300",
                "--all-containers",
                "--prefix",
            ],
            [
                "logs",
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/component=agent",
                "--tail=200",
                "--all-containers",
                "--prefix",
            ],
            ["logs", "-n", namespace, "-l", "app=e2e-upstream", "--tail=50", "--prefix"],
        ]
        for command in commands:
            try:
                result = run([self.kubectl_bin, *command], timeout=30, env=self.env, check=False)
                body = result.stdout + result.stderr
            except CommandError as error:
                body = str(error)
            sections.append(f"===== kubectl {' '.join(command)}\n{body}")
        return "\n".join(sections)
