"""Deployment files checked without Docker or a cluster: schemas, cross-references, PromQL.

- docker-compose.yml against the compose-spec JSON schema vendored by check-jsonschema;
- ops/k8s against the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate, strict);
- Prometheus rules and Grafana queries parsed by a real PromQL parser (promql-parser), and
  every metric they use either registered in the code or listed in PENDING_METRICS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml

from infra.config import PROJECT_ROOT

OPS = PROJECT_ROOT / "ops"
K8S_VERSION = "1.30.0"
RECCHAIN_IMAGE_SERVICES = {
    "migrate", "indexer-1", "indexer-2", "metadata", "api-1", "api-2", "relay", "webhooks"
}  # fmt: skip

# Metrics the dashboards and alerts use that no role registers yet. A name here that the code
# does not define is a gap to close in that role, not in the dashboard.
PENDING_METRICS: set[str] = set()
BUILTIN_METRICS = {"up"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def _registered_metrics() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(r"""(?:Counter|Gauge|Histogram|Summary)\(\s*["'](recchain_\w+)["']""")
    for package in ("indexer", "graphql_api", "writers", "db", "recchain"):
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            names.update(pattern.findall(path.read_text()))
    return names


def _metric_names(expr: str) -> set[str]:
    names: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    # Histograms are queried through their series suffixes.
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _known(name: str, registered: set[str]) -> bool:
    return name in registered or name in PENDING_METRICS or name in BUILTIN_METRICS


# --- docker-compose ---------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(PROJECT_ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_roles_wait_for_migrations_and_are_supervised() -> None:
    services = _compose()["services"]
    assert set(services) >= RECCHAIN_IMAGE_SERVICES
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in RECCHAIN_IMAGE_SERVICES - {"migrate"}:
        svc = services[name]
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert svc["restart"] == "unless-stopped", name
        assert "healthcheck" in svc, name
    for name, svc in services.items():
        if name not in {"migrate", "devnet", "pg-backup"}:
            assert "healthcheck" in svc, name
        for env_file in svc.get("env_file", []):
            assert (PROJECT_ROOT / env_file).is_file(), (name, env_file)


def test_compose_profiles_keep_the_devnet_out_of_production() -> None:
    services = _compose()["services"]
    assert services["devnet"]["profiles"] == ["dev"]
    assert services["pg-backup"]["profiles"] == ["production"]
    # Nothing always-on may hard-depend on the devnet.
    for name, svc in services.items():
        dep = (svc.get("depends_on") or {}).get("devnet")
        if dep is not None and "profiles" not in svc:
            assert dep.get("required") is False, name
    assert services["postgres"]["image"].startswith("postgres:1")
    assert int(services["postgres"]["image"].split(":")[1].split("-")[0]) >= 16


def test_compose_named_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
            else:
                assert (PROJECT_ROOT / source).exists(), (name, source)


def test_proxy_and_prometheus_point_at_real_services() -> None:
    services = set(_compose()["services"])
    nginx = (OPS / "nginx" / "nginx.conf").read_text()
    upstreams = set(re.findall(r"server\s+([\w-]+):\d+", nginx))
    assert upstreams == {"api-1", "api-2", "relay", "indexer-1", "indexer-2"}
    assert upstreams <= services
    prom = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    hosts = {
        target.split(":")[0]
        for job in prom["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert hosts - {"127.0.0.1"} <= services
    assert {"indexer-1", "indexer-2", "metadata", "api-1", "api-2", "relay", "webhooks"} <= hosts


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "ops/devnet/Dockerfile"])
def test_dockerfiles_run_as_non_root_and_copy_existing_paths(dockerfile: str) -> None:
    text = (PROJECT_ROOT / dockerfile).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0"))
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for sources in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (PROJECT_ROOT / source).exists(), (dockerfile, source)
            assert not any(source == i or source.startswith(i + "/") for i in ignored), source


def test_main_image_is_multi_stage() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM\s", text, re.MULTILINE)) >= 2
    assert "COPY --from=build" in text


# --- Kubernetes -------------------------------------------------------------------------------


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((OPS / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    docs = _k8s_docs()
    kinds = {doc["kind"] for _, doc in docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
    } <= kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_k8s_workloads_are_probed_and_unprivileged() -> None:
    deployments = {
        doc["metadata"]["name"]: doc for _, doc in _k8s_docs() if doc["kind"] == "Deployment"
    }
    assert set(deployments) == {
        "recchain-indexer",
        "recchain-api",
        "recchain-metadata",
        "recchain-relay",
        "recchain-webhooks",
    }
    assert deployments["recchain-indexer"]["spec"]["replicas"] == 2
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert "livenessProbe" in container, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["resources"]["limits"]["memory"], name
    api = deployments["recchain-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kust = yaml.safe_load((OPS / "k8s" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (OPS / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk - {"secret.example.yaml"}


# --- Prometheus and Grafana -------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((OPS / "prometheus" / "rules").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        group_names = [g["name"] for g in doc["groups"]]
        assert len(group_names) == len(set(group_names)), path
        for group in doc["groups"]:
            assert group["rules"], group["name"]
            rules.extend(group["rules"])
    return rules


def _runbook_anchors() -> set[str]:
    anchors = set()
    for line in (OPS / "RUNBOOK.md").read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_alert_rules_are_well_formed_and_use_real_metrics() -> None:
    registered = _registered_metrics()
    anchors = _runbook_anchors()
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    covered = " ".join(r["expr"] for r in rules)
    for concern in (
        "lag",
        "metadata_jobs",
        "api_errors_total",
        "observer_requests_total",
        "webhooks_oldest_pending_seconds",
    ):
        assert concern in covered, concern
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("ops/RUNBOOK.md#") and runbook.split("#")[1] in anchors, runbook
        for metric in _metric_names(rule["expr"]):
            assert _known(metric, registered), (rule["alert"], metric)


def test_pending_metrics_are_not_already_registered_under_another_type() -> None:
    # Keeps the list honest: once a role registers a name, it counts as registered.
    registered = _registered_metrics()
    assert registered, "no recchain_* metrics found in the code: the scan is broken"
    assert "recchain_indexer_lag_blocks" in registered


def test_grafana_dashboard_structure_and_queries() -> None:
    dash = json.loads((OPS / "grafana" / "dashboards" / "recchain.json").read_text())
    provisioning = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioning["datasources"][0]["uid"]
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    registered = _registered_metrics()
    occupied: set[tuple[int, int]] = set()
    used: set[str] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in _metric_names(target["expr"]):
                assert _known(metric, registered), (panel["title"], metric)
                used.add(metric)
    for concern in (
        "recchain_indexer_lag_blocks",
        "recchain_indexer_fork_depth",
        "recchain_metadata_jobs",
        "recchain_api_field_seconds",
        "recchain_api_errors_total",
        "recchain_api_subscriptions",
        "recchain_relay_broadcast_attempts_total",
        "recchain_webhooks_queue_depth",
        "recchain_webhooks_oldest_pending_seconds",
        "recchain_webhooks_deliveries_total",
    ):
        assert concern in used, concern


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "recchain.yml").read_text()
    )["providers"][0]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]


def test_promql_parser_rejects_broken_queries() -> None:
    # The checks above are only as good as the parser: make sure it does reject.
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(recchain_indexer_blocks_total[5m])")


def test_readme_settings_table_is_current_and_complete() -> None:
    from ops.configdoc import README, settings_rows, splice

    readme = README.read_text()
    assert splice(readme) == readme, "README settings table is stale: python -m ops.configdoc"
    missing = [name for name, _, _, _, meaning in settings_rows() if not meaning]
    assert not missing, f"settings without a meaning in ops/configdoc.py: {missing}"


def _env_file(path: Any) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


def test_production_settings_hide_the_schema_and_trust_only_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.config import Settings

    configmap = yaml.safe_load((OPS / "k8s" / "configmap.yaml").read_text())["data"]
    env_files = [_env_file(OPS / "env" / f) for f in ("common.env", "api.env")]
    for source in ({k: v for e in env_files for k, v in e.items()}, configmap):
        with monkeypatch.context() as m:  # read as the roles read them: from the environment
            for key, value in source.items():
                m.setenv(key, value)
            settings = Settings()
        assert not settings.api.introspection and not settings.api.field_suggestions
        assert not settings.api.graphiql
    # The API and the relay believe X-Forwarded-For from the compose proxy's pinned address.
    proxy = _compose()["services"]["proxy"]["networks"]["backend"]["ipv4_address"]
    for name in ("api.env", "relay.env"):
        trusted = json.loads(_env_file(OPS / "env" / name)["RECCHAIN_HTTP__TRUSTED_PROXIES"])
        assert trusted == [proxy], name
