"""The package as users install it:
every import declared, and a wheel that runs outside the repository.

The wheel goes into a fresh virtual environment holding nothing but the wheel; the heavy
dependencies (torch, kedro, ...) are read from the test environment's site-packages through a
``.pth`` line (installing torch again would take minutes and gigabytes). Only the wheel provides
``cgd_kedro`` there (the test environment's editable install is activated by a ``.pth`` file of its
own, which Python does not read from a directory added this way), and ``pip check`` verifies that
the wheel's declared requirements are all satisfied.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from conftest import PROJECT_ROOT


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {
        _canonical(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        for requirement in project["dependencies"]
    }


def _imported_top_level(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "cgd_kedro"}


def test_every_package_the_code_imports_is_a_declared_dependency():
    distributions = packages_distributions()
    imported = _imported_top_level(PROJECT_ROOT / "src" / "cgd_kedro")
    missing = {
        module: distributions.get(module)
        for module in imported
        if not {_canonical(d) for d in distributions.get(module, [])} & _declared()
    }
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"
    assert {
        "torch",
        "kedro",
        "mlflow",
        "fastapi",
        "open_clip",
    } <= imported  # the scan sees the real imports


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_wheel_runs_a_pipeline_and_the_platform_outside_the_repository(tmp_path):
    # Kedro's bootstrap_project (earlier tests) puts the repository's src/ on PYTHONPATH
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(PROJECT_ROOT),
            "--no-deps",
            "-w",
            str(wheels),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=clean,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    # setuptools' data-folder warning
    assert "absent from the `packages` configuration" not in build.stderr
    [wheel] = wheels.glob("cgd_kedro-*.whl")

    venv = tmp_path / "venv"
    # pip: the test environment's
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site_packages / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=clean,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.check_output(
        [python, "-c", "import cgd_kedro; print(cgd_kedro.__file__)"],
        text=True,
        cwd=tmp_path,
        env=clean,
    )
    assert where.startswith(str(site_packages)), where  # the wheel's code, not the repository's
    check = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, env=clean
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # A user's folder: the configuration, nothing else of the repository
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    # [tool.kedro]: kedro finds the project
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    env = clean | {"KEDRO_DISABLE_TELEMETRY": "1"}
    tiny = "dataset.world.n_train=200,dataset.world.n_test=80,victim.training.epochs=1"
    run = subprocess.run(
        [
            python,
            "-m",
            "cgd_kedro",
            "--pipelines",
            "poison",
            "--namespaces",
            "dataset,badnets",
            "--params",
            tiny,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(
        (project / "data/06_models/embedded/badnets/victim_model.safetensors").rglob(
            "*.safetensors"
        )
    )

    port = _free_port()
    server = subprocess.Popen(
        [python, "-m", "kedro", "platform", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, page = time.time() + 120, None
        while time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = (response.status, response.read().decode())
                break
            except OSError:
                time.sleep(1)
        assert page is not None, (
            server.stdout.read() if server.poll() is not None else "no answer in 120 s"
        )
        assert page[0] == 200 and "badnets" in page[1]  # the overview lists the run's attack
    finally:
        server.terminate()
        server.wait(timeout=30)
