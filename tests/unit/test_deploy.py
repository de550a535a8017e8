"""Deployment files: compose (both profiles), Kubernetes, Dockerfile pin, Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ponder import metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if ok.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", ["gpu", "cpu", "upstream"])
def test_compose_config_validates(profile: str) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose CLI is not installed on this machine")
    run = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--profile", profile, "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"ponder-{profile}" in run.stdout


def test_compose_structure() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    gpu, cpu = services["ponder-gpu"], services["ponder-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert gpu["ipc"] == "host"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert any("huggingface" in v for v in gpu["volumes"])
    for svc in (gpu, cpu):
        assert "/ready" in " ".join(svc["healthcheck"]["test"])
        assert "ponder" in svc["networks"]["default"]["aliases"]
    for name in ("prometheus", "grafana"):
        assert set(services[name]["profiles"]) == {"gpu", "cpu", "upstream"}
    up, vllm = services["ponder-upstream"], services["vllm"]
    assert up["environment"]["PONDER_ENGINE"] == "upstream"
    assert up["environment"]["PONDER_UPSTREAM_URL"] == "http://vllm:8000/v1"
    assert vllm["image"].startswith("vllm/vllm-openai:v") and "--max-logprobs=20" in vllm["command"]
    assert (ROOT / gpu["build"]["dockerfile"]).exists()
    assert (ROOT / "deploy" / cpu["build"]["dockerfile"]).exists() or (
        ROOT / cpu["build"]["dockerfile"]
    ).exists()
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["ponder:8000"]


def test_kubernetes_manifests() -> None:
    docs = [
        d
        for f in sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    # the metric the HPA scales on is one Ponder really exports
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == (metrics.QUEUE_DEPTH.describe()[0].name)
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    labels = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == labels


def test_dockerfile_base_image_is_in_the_supported_vllm_range() -> None:
    rng = re.search(r'"vllm>=([0-9.]+),<([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert rng is not None
    base = re.search(
        r"^FROM\s+vllm/vllm-openai:v([0-9.]+)", (ROOT / "Dockerfile").read_text(), re.M
    )
    assert base is not None

    def ver(s: str) -> tuple[int, ...]:
        return tuple(int(x) for x in s.split("."))

    assert ver(rng.group(1)) <= ver(base.group(1)) < ver(rng.group(2))
    text = (ROOT / "Dockerfile").read_text()
    assert "USER ponder" in text and '"ponder", "serve"' in text and "/ready" in text


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/Dockerfile.cpu"])
def test_images_own_their_cache_and_carry_the_client(dockerfile: str) -> None:
    """The cache folder exists and belongs to `ponder` before USER (a volume mounted there is
    then writable), and the client package is copied in (the wheel's packages.find needs it)."""
    text = (ROOT / dockerfile).read_text()
    assert "COPY clients/python ./clients/python" in text
    assert re.search(r"mkdir -p /home/ponder/\.cache", text)
    assert "chown -R ponder:ponder /home/ponder/.cache" in text
    assert text.index("chown -R ponder") < text.index("USER ponder")


def test_dashboard_queries_name_real_metrics() -> None:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/ponder.json").read_text())
    ours = {
        m.describe()[0].name
        for m in (
            metrics.REQUESTS,
            metrics.REQUEST_SECONDS,
            metrics.PHASE_SECONDS,
            metrics.SAMPLES,
            metrics.TOKENS,
            metrics.CONFIDENCE,
            metrics.VOTE_SHARE,
            metrics.IN_FLIGHT,
            metrics.QUEUE_DEPTH,
        )
    }
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(ponder_[a-z_]+)", target["expr"]):
                used.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    assert (
        used <= ours
        and {
            "ponder_requests",
            "ponder_confidence",
            "ponder_winner_vote_share",
            "ponder_engine_queue_depth",
        }
        <= used
    )
