"""The Helm chart, linted and rendered offline by Helm's own engine (helm-python-sdk).

Checks what a cluster would otherwise tell us late: labels, probes, the GPU request,
secrets referenced and never inlined, required values failing at render time, the
schema typing every value, and every value documented with ``## @param``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from dfd.settings import Settings

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "helm" / "dfd"
REQUIRED = {"s3": {"existingSecret": "dfd-s3", "endpoint": "minio.storage:9000"}}
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out = _merge(out, layer)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


MONITORING_API = "monitoring.coreos.com/v1"


def render(values: dict[str, Any], api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Render offline; ``api_versions`` are the cluster's extra APIs (``helm template
    --api-versions``), which the SDK's render takes only through its native call."""
    with helm.Chart.load(CHART) as chart:
        if api_versions:
            from helm_python import _native

            opts = {"name": "rel", "namespace": "dfd", "api_versions": list(api_versions)}
            files = json.loads(
                _native.call_string(
                    "helm_render", chart._raw(), json.dumps(values), json.dumps(opts)
                )
            )
        else:
            files = chart.render(values, name="rel", namespace="dfd")
    docs = []
    for name, text in files.items():
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: found {len(matches)}"
    return matches[0]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    return next(
        c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name
    )


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(REQUIRED)


EVERYTHING_ON = {
    "gateway": {"ingress": {"enabled": True}},
    "worker": {"autoscaling": {"keda": {"enabled": True}}},
    "triton": {
        "autoscaling": {"enabled": True, "prometheusServerAddress": "http://prom:9090"},
        "modelRepository": {"persistence": {"enabled": False}},
    },
}


@pytest.mark.parametrize("extra", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_lint_is_clean(extra: dict[str, Any]) -> None:
    report = helm.lint(CHART, merged(REQUIRED, extra), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


def test_every_object_has_the_standard_labels(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "StatefulSet",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    } <= kinds
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert all(label in labels for label in LABELS), doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_workload_selectors_match_their_pods(docs: list[dict[str, Any]]) -> None:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in workloads} == {
        "gateway",
        "worker",
        "triton",
        "redis",
        "exporter",
    }
    for doc in workloads:
        selector = doc["spec"]["selector"]["matchLabels"]
        pod_labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        target = find(
            docs, "StatefulSet" if component == "redis" else "Deployment", svc["metadata"]["name"]
        )
        assert (
            svc["spec"]["selector"].items()
            <= target["spec"]["template"]["metadata"]["labels"].items()
        )


def test_triton_requests_a_gpu_and_has_the_three_probes(docs: list[dict[str, Any]]) -> None:
    triton = container(find(docs, "Deployment", "rel-dfd-triton"), "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = triton["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    # Long enough to load the models and build TensorRT engines on first start.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert "--model-repository=/models/model_repository/gpu" in triton["args"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


def test_gpu_count_follows_the_value() -> None:
    docs = render(
        merged(REQUIRED, {"triton": {"gpus": 2, "resources": {"limits": {"memory": "4Gi"}}}})
    )
    limits = container(find(docs, "Deployment", "rel-dfd-triton"), "triton")["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 2, "memory": "4Gi"}


def test_model_repository_is_built_by_an_init_container_on_the_claim(
    docs: list[dict[str, Any]],
) -> None:
    deployment = find(docs, "Deployment", "rel-dfd-triton")
    build = container(deployment, "build-models")
    assert build["image"].startswith("dfd-models:")
    assert build["args"] == ["--target", "gpu"]
    assert env_of(build)["DFD_DATA_DIR"]["value"] == "/models"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "rel-dfd-models"
    find(docs, "PersistentVolumeClaim", "rel-dfd-models")
    # A ReadWriteOnce claim: the old pod must be gone before the new one mounts it.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_weights_claim_is_mounted_as_the_weights_dir() -> None:
    values = merged(
        REQUIRED, {"triton": {"modelRepository": {"build": {"weightsClaim": "dfd-weights"}}}}
    )
    deployment = find(render(values), "Deployment", "rel-dfd-triton")
    build = container(deployment, "build-models")
    assert env_of(build)["DFD_WEIGHTS_DIR"]["value"] == "/weights"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {
        "claimName": "dfd-weights",
        "readOnly": True,
    }


def test_s3_credentials_come_from_the_existing_secret(docs: list[dict[str, Any]]) -> None:
    for name in ("gateway", "worker"):
        env = env_of(container(find(docs, "Deployment", f"rel-dfd-{name}"), name))
        assert env["DFD_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "dfd-s3",
            "key": "access-key",
        }
        assert env["DFD_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "dfd-s3",
            "key": "secret-key",
        }
    assert not [d for d in docs if d["kind"] == "Secret"]
    config = find(docs, "ConfigMap", "rel-dfd-config")["data"]
    assert not [k for k in config if re.search(r"KEY|PASSWORD|SECRET", k)]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"s3": {"endpoint": "minio:9000"}}, "s3.existingSecret is required"),
        ({"s3": {"existingSecret": "dfd-s3"}}, "s3.endpoint is required"),
        (
            merged(REQUIRED, {"redis": {"enabled": False}}),
            "externalRedis.url or externalRedis.existingSecret",
        ),
        (
            merged(REQUIRED, {"config": {"settings": {"DFD_REDIS_URL": "redis://x"}}}),
            "set by the chart",
        ),
        (merged(REQUIRED, {"triton": {"replicaCount": 2}}), "ReadWriteMany"),
    ],
    ids=["no-s3-secret", "no-s3-endpoint", "no-redis", "reserved-setting", "rwo-models-shared"],
)
def test_missing_or_conflicting_values_fail_at_render_time(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_values_violating_the_schema_are_refused() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(REQUIRED)
        for bad in (
            {"gateway": {"replicaCount": "two"}},
            {"triton": {"gpus": 0}},
            {"config": {"settings": {"LOG_LEVEL": "DEBUG"}}},
            {"gateway": {"replicaCuont": 3}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(merged(REQUIRED, bad))


def test_internal_redis_keeps_an_aof_and_its_password_comes_from_a_secret() -> None:
    values = merged(REQUIRED, {"redis": {"auth": {"existingSecret": "dfd-redis"}}})
    docs = render(values)
    redis = container(find(docs, "StatefulSet", "rel-dfd-redis"), "redis")
    assert "--appendonly yes" in redis["args"][0]
    assert '--requirepass "$REDIS_PASSWORD"' in redis["args"][0]
    env = container(find(docs, "Deployment", "rel-dfd-worker"), "worker")["env"]
    names = [e["name"] for e in env]
    # $(REDIS_PASSWORD) expands only from a variable defined earlier in the list.
    assert names.index("REDIS_PASSWORD") < names.index("DFD_REDIS_URL")
    url = next(e for e in env if e["name"] == "DFD_REDIS_URL")["value"]
    assert url == "redis://:$(REDIS_PASSWORD)@rel-dfd-redis:6379/0"


def test_external_redis_url_from_a_secret_replaces_the_statefulset() -> None:
    values = merged(
        REQUIRED, {"redis": {"enabled": False}, "externalRedis": {"existingSecret": "redis-url"}}
    )
    docs = render(values)
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    env = env_of(container(find(docs, "Deployment", "rel-dfd-gateway"), "gateway"))
    assert env["DFD_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-url",
        "key": "redis-url",
    }


def test_configmap_holds_only_real_settings(docs: list[dict[str, Any]]) -> None:
    config = find(docs, "ConfigMap", "rel-dfd-config")["data"]
    fields = {f"DFD_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields
    assert config["DFD_STORE"] == "s3"
    assert config["DFD_TRITON_URL"] == "rel-dfd-triton:8001"
    assert config["DFD_S3_ENDPOINT"] == "minio.storage:9000"
    # Every value the chart sets must parse as a Settings field.
    Settings.model_validate({k[4:].lower(): v for k, v in config.items()})


def test_default_settings_values_are_real_settings() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    fields = {f"DFD_{name.upper()}" for name in Settings.model_fields}
    assert set(values["config"]["settings"]) <= fields


def test_gateway_probes_and_ingress() -> None:
    values = merged(
        REQUIRED,
        {
            "gateway": {
                "ingress": {"enabled": True, "hostname": "dfd.example.org", "tlsSecret": "dfd-tls"}
            }
        },
    )
    docs = render(values)
    gateway = container(find(docs, "Deployment", "rel-dfd-gateway"), "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ingress = find(docs, "Ingress", "rel-dfd-gateway")
    assert ingress["spec"]["rules"][0]["host"] == "dfd.example.org"
    assert ingress["spec"]["tls"] == [{"hosts": ["dfd.example.org"], "secretName": "dfd-tls"}]
    assert (
        find(docs, "ConfigMap", "rel-dfd-config")["data"]["DFD_PUBLIC_BASE_URL"]
        == "https://dfd.example.org"
    )


def test_dfd_pods_run_as_non_root(docs: list[dict[str, Any]]) -> None:
    for name in ("gateway", "worker", "triton"):
        spec = find(docs, "Deployment", f"rel-dfd-{name}")["spec"]["template"]["spec"]
        for c in spec["containers"] + spec.get("initContainers", []):
            context = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, (name, c["name"])
            assert context.get("allowPrivilegeEscalation") is False, (name, c["name"])


def test_service_monitors_are_on_when_the_cluster_has_the_crd(docs: list[dict[str, Any]]) -> None:
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]  # no CRD: none
    on = render(
        merged(REQUIRED, {"metrics": {"serviceMonitor": {"labels": {"release": "prom"}}}}),
        api_versions=(MONITORING_API,),
    )
    monitors = {d["metadata"]["name"]: d for d in on if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"rel-dfd-gateway", "rel-dfd-triton", "rel-dfd-exporter"}
    assert monitors["rel-dfd-triton"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitors["rel-dfd-gateway"]["metadata"]["labels"]["release"] == "prom"
    exporter = monitors["rel-dfd-exporter"]["spec"]["endpoints"][0]
    assert exporter["port"] == "metrics" and exporter["scrapeTimeout"] == "20s"
    # Each selects its own Service, whose port it names.
    for name, monitor in monitors.items():
        service = find(on, "Service", name)
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["endpoints"][0]["port"] in {
            p["name"] for p in service["spec"]["ports"]
        }
    off = render(
        merged(REQUIRED, {"metrics": {"serviceMonitor": {"enabled": False}}}),
        api_versions=(MONITORING_API,),
    )
    assert not [d for d in off if d["kind"] == "ServiceMonitor"]


def test_prometheus_rule_ships_the_rules_file_when_the_crd_exists(
    docs: list[dict[str, Any]],
) -> None:
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
    on = render(
        merged(REQUIRED, {"metrics": {"prometheusRule": {"labels": {"release": "prom"}}}}),
        api_versions=(MONITORING_API,),
    )
    rule = find(on, "PrometheusRule", "rel-dfd-alerts")
    assert rule["metadata"]["labels"]["release"] == "prom"
    # The very rules promtool tests, their {{ $value }} templates left to Prometheus.
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yml").read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "DfdQueueBacklog",
        "DfdWorkerCrashRate",
        "DfdInferenceSlow",
        "DfdRedisUnreachable",
    } <= alerts
    off = render(
        merged(REQUIRED, {"metrics": {"prometheusRule": {"enabled": False}}}),
        api_versions=(MONITORING_API,),
    )
    assert not [d for d in off if d["kind"] == "PrometheusRule"]


def test_dashboard_configmap_for_grafanas_sidecar(docs: list[dict[str, Any]]) -> None:
    config = find(docs, "ConfigMap", "rel-dfd-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config["data"]["dfd.json"])
    assert shipped == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    folder = render(
        merged(
            REQUIRED,
            {
                "metrics": {
                    "dashboard": {"namespace": "grafana", "annotations": {"grafana_folder": "dfd"}}
                }
            },
        )
    )
    config = find(folder, "ConfigMap", "rel-dfd-dashboard")
    assert config["metadata"]["namespace"] == "grafana"
    assert config["metadata"]["annotations"] == {"grafana_folder": "dfd"}
    off = render(merged(REQUIRED, {"metrics": {"dashboard": {"enabled": False}}}))
    assert not [d for d in off if d["metadata"]["name"] == "rel-dfd-dashboard"]


def test_exporter_is_one_pod_with_only_the_redis_credentials(docs: list[dict[str, Any]]) -> None:
    deployment = find(docs, "Deployment", "rel-dfd-exporter")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two at once
    exporter = container(deployment, "exporter")
    assert exporter["args"] == ["dfd", "exporter", "--host", "0.0.0.0", "--port", "9120"]
    assert exporter["image"].startswith("dfd-worker:")
    assert set(env_of(exporter)) == {"DFD_REDIS_URL"}
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/metrics"
    service = find(docs, "Service", "rel-dfd-exporter")
    assert service["spec"]["ports"][0]["name"] == "metrics"
    off = render(merged(REQUIRED, {"exporter": {"enabled": False}}), api_versions=(MONITORING_API,))
    assert not [d for d in off if d["metadata"]["name"] == "rel-dfd-exporter"]


def test_gateway_processes_are_uvicorn_workers() -> None:
    docs = render(merged(REQUIRED, {"gateway": {"processes": 4}}))
    args = container(find(docs, "Deployment", "rel-dfd-gateway"), "gateway")["args"]
    assert args[-2:] == ["--workers", "4"]


def scaled(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize(
    ("values", "kinds", "worker_replicas", "triton_replicas"),
    [
        ({}, set(), 2, 1),
        ({"worker": {"autoscaling": {"keda": {"enabled": True}}}}, {"ScaledObject"}, None, 1),
        (
            {"worker": {"autoscaling": {"hpa": {"enabled": True}}}},
            {"HorizontalPodAutoscaler"},
            None,
            1,
        ),
        (
            {
                "triton": {
                    "autoscaling": {"enabled": True, "prometheusServerAddress": "http://prom:9090"},
                    "modelRepository": {"persistence": {"accessModes": ["ReadWriteMany"]}},
                }
            },
            {"ScaledObject"},
            2,
            None,
        ),
        (
            {
                "worker": {"autoscaling": {"keda": {"enabled": True}}},
                "triton": {
                    "autoscaling": {
                        "enabled": True,
                        "prometheusServerAddress": "http://prom:9090",
                        "metric": "gpuUtilization",
                    },
                    "modelRepository": {"persistence": {"enabled": False}},
                },
            },
            {"ScaledObject"},
            None,
            None,
        ),
    ],
    ids=["fixed", "keda-workers", "hpa-workers", "keda-triton-queue-time", "keda-both-gpu"],
)
def test_each_scaling_combination_renders(
    values: dict[str, Any],
    kinds: set[str],
    worker_replicas: int | None,
    triton_replicas: int | None,
) -> None:
    docs = render(merged(REQUIRED, values))
    found = {d["kind"] for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")}
    assert found == kinds
    # An autoscaler owns the count: the Deployment must not reset it at each upgrade.
    assert find(docs, "Deployment", "rel-dfd-worker")["spec"].get("replicas") == worker_replicas
    assert find(docs, "Deployment", "rel-dfd-triton")["spec"].get("replicas") == triton_replicas
    for doc in scaled(docs, "ScaledObject") + scaled(docs, "HorizontalPodAutoscaler"):
        target = doc["spec"]["scaleTargetRef"]["name"]
        find(docs, "Deployment", target)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"


def test_keda_reads_each_priority_list_of_the_internal_redis_with_its_password() -> None:
    values = merged(
        REQUIRED,
        {
            "redis": {"auth": {"existingSecret": "dfd-redis"}},
            "worker": {
                "autoscaling": {"keda": {"enabled": True, "jobsPerWorker": 3}, "maxReplicas": 20}
            },
        },
    )
    docs = render(values)
    scaler = find(docs, "ScaledObject", "rel-dfd-worker")
    assert scaler["spec"]["maxReplicaCount"] == 20
    triggers = scaler["spec"]["triggers"]
    assert [t["metadata"]["listName"] for t in triggers] == [
        f"rq:queue:{p}" for p in ("high", "default", "low")
    ]
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == "rel-dfd-redis:6379"
        assert trigger["metadata"]["listLength"] == "3"
        assert trigger["metadata"]["passwordFromEnv"] == "REDIS_PASSWORD"
    worker = container(find(docs, "Deployment", "rel-dfd-worker"), "worker")
    assert "REDIS_PASSWORD" in env_of(worker)  # where passwordFromEnv reads it


def test_keda_with_an_external_redis_takes_its_address_and_password_secret() -> None:
    external = {"redis": {"enabled": False}, "externalRedis": {"existingSecret": "redis-url"}}
    keda = {"enabled": True, "redisAddress": "redis.data:6380", "redisPasswordSecret": "redis-pw"}
    docs = render(merged(REQUIRED, external, {"worker": {"autoscaling": {"keda": keda}}}))
    auth = find(docs, "TriggerAuthentication", "rel-dfd-worker")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "redis-pw", "key": "redis-password"}
    ]
    for trigger in find(docs, "ScaledObject", "rel-dfd-worker")["spec"]["triggers"]:
        assert trigger["metadata"]["address"] == "redis.data:6380"
        assert trigger["authenticationRef"] == {"name": "rel-dfd-worker"}
        assert "passwordFromEnv" not in trigger["metadata"]


def test_triton_scales_on_its_queue_time_from_prometheus() -> None:
    values = merged(
        REQUIRED,
        {
            "triton": {
                "autoscaling": {
                    "enabled": True,
                    "prometheusServerAddress": "http://prom:9090",
                    "queueTimeTargetMs": 25,
                },
                "modelRepository": {"persistence": {"accessModes": ["ReadWriteMany"]}},
            }
        },
    )
    trigger = find(render(values), "ScaledObject", "rel-dfd-triton")["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "25"
    query = trigger["metadata"]["query"]
    assert "nv_inference_queue_duration_us" in query and 'service="rel-dfd-triton"' in query


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"worker": {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}},
            "enable keda or hpa, not both",
        ),
        (
            {
                "redis": {"enabled": False},
                "externalRedis": {"url": "redis://r:6379/0"},
                "worker": {"autoscaling": {"keda": {"enabled": True}}},
            },
            "worker.autoscaling.keda.redisAddress",
        ),
        (
            {
                "triton": {
                    "autoscaling": {"enabled": True},
                    "modelRepository": {"persistence": {"enabled": False}},
                }
            },
            "triton.autoscaling.prometheusServerAddress is required",
        ),
        (
            {
                "triton": {
                    "autoscaling": {"enabled": True, "prometheusServerAddress": "http://p:9090"}
                }
            },
            "ReadWriteMany",
        ),
        (
            {
                "worker": {
                    "autoscaling": {"hpa": {"enabled": True}, "minReplicas": 5, "maxReplicas": 2}
                }
            },
            "minReplicas is above",
        ),
    ],
    ids=["keda-and-hpa", "keda-no-address", "triton-no-prometheus", "triton-rwo", "min-over-max"],
)
def test_conflicting_scaling_values_fail_at_render_time(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(merged(REQUIRED, values))


# -- values.yaml, its documentation and its schema, read without Helm ------------------


def documented_params() -> dict[str, str]:
    text = (CHART / "values.yaml").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*## @param (\S+) (.+)$", text, re.M)}


def leaf_paths(values: dict[str, Any], params: dict[str, str], prefix: str = "") -> list[str]:
    """Paths of the values that need a @param: a documented path, or a non-mapping."""
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in params or not isinstance(value, dict) or not value:
            out.append(path)
        else:
            out.extend(leaf_paths(value, params, f"{path}."))
    return out


def test_every_value_is_documented_and_every_param_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    params = documented_params()
    leaves = leaf_paths(values, params)
    assert [p for p in leaves if p not in params] == []
    assert [p for p in params if p not in leaves] == []
    assert all(len(description.split()) >= 3 for description in params.values())


def test_schema_types_every_documented_value_and_accepts_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema)
    for path, description in documented_params().items():
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        assert "type" in node, path
        assert node.get("description") == description, path


def test_every_value_a_template_reads_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    params = documented_params()
    missing = []
    for template in sorted((CHART / "templates").glob("*")):
        for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()):
            node: Any = values
            walked = []
            for part in ref.split("."):
                if ".".join(walked) in params and not isinstance(node, dict):
                    break
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{template.name}: .Values.{ref}")
                    break
                node = node[part]
                walked.append(part)
    assert missing == []


def test_console_keys_come_from_an_existing_secret_and_are_off_by_default(
    docs: list[dict[str, Any]],
) -> None:
    assert "DFD_ADMIN_KEYS" not in env_of(
        container(find(docs, "Deployment", "rel-dfd-gateway"), "gateway")
    )
    values = merged(REQUIRED, {"config": {"existingAdminKeysSecret": "console-keys"}})
    env = env_of(container(find(render(values), "Deployment", "rel-dfd-gateway"), "gateway"))
    assert env["DFD_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "console-keys",
        "key": "admin-keys",
    }


def test_ingress_lets_uploads_of_the_configured_size_through() -> None:
    on = {"gateway": {"ingress": {"enabled": True}}}
    ingress = find(render(merged(REQUIRED, on)), "Ingress", "rel-dfd-gateway")
    # 200000000 bytes is 190.7 MiB; room for the multipart framing on top.
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "192m"
    )
    own = merged(
        REQUIRED,
        on,
        {
            "gateway": {
                "ingress": {"annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1g"}}
            }
        },
    )
    ingress = find(render(own), "Ingress", "rel-dfd-gateway")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "1g"
