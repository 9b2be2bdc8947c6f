"""Smoke tests: every benchmark script runs end to end with ``--quick``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NEEDS = {"bench_normflows": "normflows"}  # scripts that import a library CI does not install


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` from its path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name",
    [
        "bench_conv1x1",
        "bench_glow_step",
        "bench_pyro_overhead",
        "bench_peak",
        "bench_importance",
        "bench_normflows",
        "bench_memory",
        "bench_fid",
        "bench_ops",
        "bench_allocator",
    ],
)
def test_benchmark_runs_quick(name, capsys, monkeypatch):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])  # an optional peer library (the `bench` extra)
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared `timing`
    script = load_script(name)
    script.main(script.parser().parse_args(["--quick"]))
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    assert "|---" in out


def test_gpu_checks_run_the_steps_named(tmp_path):
    """``gpu_checks.sh`` runs the steps in ``STEPS`` and only those (here, without a GPU, the
    CUDA tests, which skip)."""
    env = {**os.environ, "STEPS": "tests", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_checks.sh"), str(tmp_path), str(tmp_path / "run"), "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=BENCHMARKS.parent,
        check=True,
    )
    assert "== tests: exit status 0" in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tests.txt"]
    assert " passed" in (tmp_path / "tests.txt").read_text()
