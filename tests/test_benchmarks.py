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
        "flops_glow_layer",
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


def gpu_checks(tmp_path, steps: str, python: str = sys.executable):
    env = {**os.environ, "STEPS": steps, "PYTHON": python}
    script = BENCHMARKS / "gpu_checks.sh"
    command = ["bash", str(script), str(tmp_path / "out"), str(tmp_path / "run"), "1"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)


def test_gpu_checks_run_the_steps_named(tmp_path):
    """``gpu_checks.sh`` runs the steps in ``STEPS`` and only those (here, without a GPU, the
    CUDA tests, which skip), from any directory."""
    done = gpu_checks(tmp_path, "tests")
    assert done.returncode == 0, done.stderr
    assert "== tests: exit status 0" in done.stdout
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["tests.txt"]
    assert " passed" in (tmp_path / "out" / "tests.txt").read_text()


def test_gpu_checks_report_failures_and_unknown_steps(tmp_path):
    failed = gpu_checks(tmp_path, "tests", python="false")
    assert failed.returncode == 1
    assert "== tests: exit status 1" in failed.stdout
    unknown = gpu_checks(tmp_path, "tests,table2")
    assert unknown.returncode == 2
    assert "unknown step 'tests,table2'" in unknown.stderr


def test_the_glow_layer_floor_is_flops_over_the_peak(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("flops_glow_layer")
    assert script.epoch_floor(54.26e9, 50000, 11.34) == pytest.approx(239.2, abs=0.1)
    # A squeeze quarters the pixels the 1x1 convolution runs on, at 4x its input channels.
    assert script.step_flops(0, 256, 1) > 2.5 * script.step_flops(1, 256, 1)
