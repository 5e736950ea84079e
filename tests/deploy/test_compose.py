"""docker-compose.yml and the Dockerfile, checked statically (there is no Docker engine on our machines).

`docker-compose config` (Debian's docker-compose, installed by `scripts/install.sh --test`) parses and validates the
file against the Compose schema; the rest asserts what an operator relies on: the GPU profile reserves an NVIDIA
device and builds llama.cpp with CUDA, every service has a healthcheck and runs as a non-root user, no secret is baked
in, and the image installs with the very script that `make install` and CI run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SECRET = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: scripts/install.sh --test installs Debian's docker-compose"
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    for profile in ([], ["--profile", "gpu"]):
        r = subprocess.run([exe, "-f", str(COMPOSE), "--project-directory", str(tmp_path), *profile, "config"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        resolved = yaml.safe_load(r.stdout)
        assert {"api", "ui"} <= set(resolved["services"])


def test_services_have_healthchecks_volumes_and_a_non_root_user(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "api-gpu", "ui"} <= set(services)
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert not str(svc.get("user", "")).startswith(("0", "root")), f"{name} runs as root"
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert {"/data", "/data/models"} <= mounts, name
        assert svc["env_file"] == ".env"
    assert {"consulta-data", "consulta-models"} <= set(compose["volumes"])
    assert re.search(r"^USER consulta$", DOCKERFILE.read_text(), re.M)


def test_gpu_profile_reserves_an_nvidia_device_and_builds_with_cuda(compose: dict) -> None:
    gpu = compose["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["CONSULTA_CUDA"] == "1"
    # llama.cpp builds CUDA code for the GPU it sees ("native"); none is visible during `docker build`
    assert "-DGGML_NATIVE=OFF" in gpu["build"]["args"]["CMAKE_ARGS"]
    assert 'CMAKE_ARGS="${CMAKE_ARGS}"' in DOCKERFILE.read_text(), "the Dockerfile must pass CMAKE_ARGS to install.sh"
    assert gpu["environment"]["CONSULTA_SERVING__N_GPU_LAYERS"] == "-1"
    assert "api" in gpu["networks"]["default"]["aliases"], "the UI must find the GPU API under the name 'api'"
    assert compose["services"]["api"]["build"]["args"]["CONSULTA_CUDA"] == "0"
    assert not compose["services"]["api"].get("profiles"), "the CPU API must start with a plain `docker compose up`"


def test_image_installs_with_the_same_script_as_the_readme_and_ci() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^RUN .*bash scripts/install\.sh\s*$", dockerfile, re.M)
    assert "CONSULTA_CUDA=${CONSULTA_CUDA}" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert "bash scripts/install.sh" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()
    # the container runs the same `consulta` commands that `make run` does
    entry = (REPO / "scripts" / "container.sh").read_text()
    run = (REPO / "scripts" / "run.sh").read_text()
    for cmd in ("models prepare", "serve --host", "ui --port"):
        assert cmd in entry and cmd in run, cmd


def test_no_secret_is_baked_into_the_image_or_the_compose_file(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for key in svc.get("environment", {}):
            assert not SECRET.search(key), f"{name} sets {key} in docker-compose.yml; put it in .env"
        for key in (svc.get("build", {}).get("args") or {}):
            assert not SECRET.search(key), f"{name} passes {key} as a build argument"
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(("ENV", "ARG")):
            assert not SECRET.search(line), line
    assert ".env" in (REPO / ".dockerignore").read_text().split()
    assert ".env" in (REPO / ".gitignore").read_text().split()
