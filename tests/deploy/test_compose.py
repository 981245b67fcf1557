"""docker-compose.yml, checked without a Docker engine.

It parses; its build contexts, Dockerfiles and commands exist; every DFD_* variable is a
real setting and the values it resolves to (with .env.example filled in) build valid
Settings; secrets only come from the environment; Triton gets a GPU, a readiness health
check and the repository the one-shot builder writes; the services wait for each other.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import build_parser
from dfd.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
FIELDS = {f"DFD_{name.upper()}" for name in Settings.model_fields}
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name, "")
        if op in (":?", "?") and not current:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and not current:
            return arg
        return current

    return _VAR.sub(one, value).replace("$$", "$")


def filled_env() -> dict[str, str]:
    """.env.example with the blanks (the secrets) filled in, as a user would."""
    return {k: v or f"test-{k.lower()}" for k, v in env_example().items()}


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_services() -> None:
    assert set(SERVICES) == {
        "redis",
        "minio",
        "models",
        "triton",
        "gateway",
        "worker",
        "exporter",
        "prometheus",
        "grafana",
    }
    # Prometheus and Grafana start only with `--profile monitoring`.
    assert {s for s, v in SERVICES.items() if v.get("profiles")} == {"prometheus", "grafana"}


@pytest.mark.parametrize("name", sorted(s for s in SERVICES if "build" in SERVICES[s]))
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = SERVICES[name]["build"]
    context = ROOT / build["context"]
    assert context.is_dir()
    assert (context / build["dockerfile"]).is_file()


def test_every_dfd_variable_is_a_setting() -> None:
    used = {k for s in SERVICES for k in environment(s) if k.startswith("DFD_")}
    used |= {
        k
        for k in env_example()
        if k.startswith("DFD_") and k not in ("DFD_WORKERS", "DFD_IMAGE_TAG")
    }
    assert used - FIELDS == set()


def test_every_required_variable_is_in_the_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = {m.group(1) for m in _VAR.finditer(text) if m.group(2) in (":?", "?")}
    assert required and required <= set(env_example())
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(environment("gateway")["DFD_REDIS_URL"], {})


@pytest.mark.parametrize("name", ["gateway", "worker", "exporter"])
def test_resolved_settings_are_valid_and_point_at_the_services(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = filled_env()
    for key, value in environment(name).items():
        monkeypatch.setenv(key, interpolate(value, env))
    settings = Settings()

    assert settings.store == "s3"
    assert settings.redis_url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.triton_url == "triton:8001"
    assert settings.s3_endpoint.split(":")[0] == "minio"
    assert settings.s3_access_key.get_secret_value() == env["DFD_S3_ACCESS_KEY"]
    assert settings.api_keys == []
    assert settings.admin_keys == []


def test_secrets_come_only_from_the_environment() -> None:
    secretish = re.compile(r"KEY|PASSWORD|SECRET|ROOT_USER")
    for name in SERVICES:
        for key, value in environment(name).items():
            # Key lists default to [] (no auth, console off): an empty list is a choice.
            if secretish.search(key) and key not in ("DFD_API_KEYS", "DFD_ADMIN_KEYS"):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}.{key} = {value!r}"
    # The real .env is never committed.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be in .gitignore"


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = SERVICES["redis"]
    assert "--appendonly yes" in " ".join(redis["command"])
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "ping" in " ".join(redis["healthcheck"]["test"])


def _mount(service: str, volume: str) -> str:
    for entry in SERVICES[service].get("volumes", []):
        source, target, *_ = entry.split(":")
        if source == volume:
            return target
    raise AssertionError(f"{service} does not mount {volume}")


def test_triton_gets_a_gpu_and_serves_what_the_builder_writes() -> None:
    triton = SERVICES["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["models"]["condition"] == "service_completed_successfully"

    # The builder writes <DFD_DATA_DIR>/model_repository/gpu into model-data; Triton reads it there.
    data_dir = environment("models")["DFD_DATA_DIR"]
    assert _mount("models", "model-data") == data_dir
    flag = next(a for a in triton["command"] if a.startswith("--model-repository="))
    assert flag == f"--model-repository={_mount('triton', 'model-data')}/model_repository/gpu"


def test_the_builder_runs_dfd_models_build_for_gpu() -> None:
    from tests.deploy.test_dockerfiles import DOCKERFILES

    entrypoint = DOCKERFILES["models"].exec_form("ENTRYPOINT")
    args = build_parser().parse_args([*entrypoint[1:], *SERVICES["models"]["command"]])
    assert callable(args.handler) and args.target == "gpu"


def test_gateway_and_workers_share_the_data_folder() -> None:
    for name in ("gateway", "worker"):
        assert _mount(name, "dfd-data") == environment(name)["DFD_DATA_DIR"]


def test_services_wait_for_healthy_dependencies() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], (
                    f"{name} waits for {dependency}'s health"
                )
    assert set(SERVICES["worker"]["depends_on"]) == {"redis", "minio", "triton"}


def test_gateway_healthcheck_hits_a_real_route() -> None:
    from gateway.app import create_app

    test = " ".join(SERVICES["gateway"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/[\w/]*)", test).group(1)
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    routes = set(app.openapi()["paths"])
    assert path in routes


def test_service_commands_are_dfd_subcommands() -> None:
    # gateway and worker use their images' CMD; check nothing overrides it with a typo.
    for name in ("gateway", "worker"):
        assert "command" not in SERVICES[name] or build_parser().parse_args(
            SERVICES[name]["command"][1:]
        )
    assert (
        json.dumps(SERVICES["worker"]["deploy"]["replicas"]).strip('"').startswith("${DFD_WORKERS")
    )


def _binds(service: str) -> dict[str, str]:
    """Bind mounts of ``service``: target -> source path in the checkout."""
    out = {}
    for entry in SERVICES[service].get("volumes", []):
        source, target, *_ = entry.split(":")
        if source.startswith("./"):
            out[target] = source
    return out


def test_exporter_runs_dfd_exporter_on_the_port_prometheus_scrapes() -> None:
    command = SERVICES["exporter"]["command"]
    args = build_parser().parse_args(command[1:])
    assert callable(args.handler) and args.host == "0.0.0.0"
    config = yaml.safe_load((ROOT / "docker" / "monitoring" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: (sd["names"][0], sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    assert targets == {
        "dfd-gateway": ("gateway", 8000),
        "dfd-exporter": ("exporter", args.port),
        "triton": ("triton", 8002),
    }


def test_prometheus_config_is_valid_and_loads_the_alert_rules() -> None:
    import shutil

    binds = _binds("prometheus")
    for source in binds.values():
        assert (ROOT / source).is_file(), source
    config_path = ROOT / binds["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    rules_target = next(t for t, s in binds.items() if s.endswith("prometheus-rules.yml"))
    from fnmatch import fnmatch

    assert any(fnmatch(rules_target, pattern) for pattern in config["rule_files"])
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run scripts/install-system-deps.sh (Debian: prometheus)")
    checked = subprocess.run(
        [exe, "check", "config", str(config_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisions_prometheus_and_the_dashboard() -> None:
    binds = _binds("grafana")
    for source in binds.values():
        assert (ROOT / source).is_file(), source
    by_source = {source: target for target, source in binds.items()}
    datasources = yaml.safe_load(
        (ROOT / "docker" / "monitoring" / "grafana" / "datasources.yml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (ROOT / "docker" / "monitoring" / "grafana" / "dashboards.yml").read_text()
    )
    folder = providers["providers"][0]["options"]["path"]
    dashboard = by_source["./helm/dfd/files/grafana-dashboard.json"]
    assert Path(dashboard).parent == Path(folder)
