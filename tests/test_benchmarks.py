"""Smoke tests: every benchmark script runs end to end with ``--quick``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

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
        "bench_compile",
        "bench_conv1x1",
        "bench_glow_step",
        "bench_pyro_overhead",
        "bench_peak",
        "bench_importance",
        "bench_normflows",
        "bench_memory",
        "bench_fid",
        "bench_evaluation",
        "bench_ops",
        "bench_allocator",
        "bench_data_parallel",
        "bench_jit",
        "flops_glow_layer",
        "fid_from_samples",
        "scaling_model",
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
    if name != "scaling_model":  # arithmetic, untimed
        assert out.splitlines()[-1].startswith("Load average (1 min) at the end: ")


@pytest.mark.parametrize(
    ("name", "defaults", "absent"),
    [
        (
            "bench_conv1x1",
            {"quick": False, "repeats": 21, "warmup": 3, "min_time": 0.02, "seed": 0},
            ["device"],
        ),
        (
            "bench_importance",
            {"quick": False, "repeats": 3, "warmup": 0, "min_time": 0.0, "seed": 0},
            ["device"],
        ),
        ("bench_fid", {"quick": False, "repeats": 5, "warmup": 1}, ["min_time", "seed", "device"]),
        ("bench_ops", {"quick": False, "warmup": 3, "seed": 0}, ["repeats", "min_time", "device"]),
        ("bench_allocator", {"quick": False, "repeats": 3}, ["warmup", "seed", "device"]),
        (
            "flops_glow_layer",
            {"quick": False, "repeats": 5, "warmup": 1, "min_time": 1.0, "device": "cpu"},
            [],
        ),
        ("fid_from_samples", {"quick": False, "seed": 0, "device": "cpu"}, ["repeats"]),
        ("bench_vs_glow", {"quick": False, "repeats": 5, "device": "cpu"}, ["warmup", "seed"]),
        ("bench_prior", {"quick": False}, ["repeats", "warmup", "device"]),
    ],
)
def test_each_script_keeps_its_defaults_and_only_its_options(name, defaults, absent, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    parser = load_script(name).parser()
    args = vars(parser.parse_args([]))
    assert {option: args.get(option) for option in defaults} == defaults
    assert not set(absent) & set(args)
    for option in absent:
        with pytest.raises(SystemExit):
            parser.parse_args(["--" + option.replace("_", "-"), "1"])


def test_common_options_are_added_with_the_defaults_given(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    timing = load_script("timing")
    parser = argparse.ArgumentParser()
    timing.add_common_options(
        parser, quick="a smoke test", repeats=3, min_time=1.0, helps={"repeats": "pairs of runs"}
    )
    assert vars(parser.parse_args([])) == {"quick": False, "repeats": 3, "min_time": 1.0}
    args = parser.parse_args(["--quick", "--repeats", "5", "--min-time", "2"])
    assert vars(args) == {"quick": True, "repeats": 5, "min_time": 2.0}
    assert isinstance(args.min_time, float)
    assert "a smoke test" in parser.format_help()
    assert "pairs of runs" in parser.format_help()
    for left_out in ("--warmup", "--seed", "--device"):
        with pytest.raises(SystemExit):
            parser.parse_args([left_out, "1"])


def test_the_machine_and_the_load_are_printed_before_and_after(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    timing = load_script("timing")
    loads = iter(["0.50", "1.50"])
    monkeypatch.setattr(timing, "machine", lambda: "a test machine")
    monkeypatch.setattr(timing, "load_average", lambda: next(loads))
    with timing.reported_machine():
        print("the table")
    assert capsys.readouterr().out.splitlines() == [
        "Machine: a test machine",
        "Load average (1 min) at the start: 0.50",
        "the table",
        "",
        "Load average (1 min) at the end: 1.50",
    ]
    with pytest.raises(RuntimeError), timing.reported_machine():
        raise RuntimeError("failed")
    assert "at the end" not in capsys.readouterr().out


def test_a_table_starts_with_its_command_and_a_jobs_process_prints_none(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    baselines = load_script("baselines")
    args = load_script("bench_prior").parser().parse_args(["--quick"])
    with baselines.reported_table(args, "python benchmarks/bench_prior.py --quick"):
        print("the table")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Command: `python benchmarks/bench_prior.py --quick`"
    assert lines[1].startswith("Machine: ")
    assert lines[2].startswith("Load average (1 min) at the start: ")
    assert lines[3].startswith("A --quick smoke run")
    assert lines[4:-1] == ["the table", ""]
    assert lines[-1].startswith("Load average (1 min) at the end: ")
    args.only = "two-stage"
    with baselines.reported_table(args, "python benchmarks/bench_prior.py --only two-stage"):
        print("training")
    assert capsys.readouterr().out == "training\n"


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
    for name in ("throughput", "fid10k"):  # prepared for a GPU; here only their failure
        failed = gpu_checks(tmp_path, name, python="false")
        assert failed.returncode == 1
        assert f"== {name}: exit status 1" in failed.stdout
    unknown = gpu_checks(tmp_path, "tests,table2")
    assert unknown.returncode == 2
    assert "unknown step 'tests,table2'" in unknown.stderr


def test_the_glow_layer_floor_is_flops_over_the_peak(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("flops_glow_layer")
    assert script.epoch_floor(54.26e9, 50000, 11.34) == pytest.approx(239.2, abs=0.1)
    # A squeeze quarters the pixels the 1x1 convolution runs on, at 4x its input channels.
    assert script.step_flops(0, 256, 1) > 2.5 * script.step_flops(1, 256, 1)


def test_each_phase_floor_is_its_flops_over_a_peak_and_measured_against_it(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("flops_glow_layer")
    presets = script.PRESETS
    assert script.epoch_images(presets["cpu-long"]) == 60000
    assert script.epoch_images(presets["paper-cifar10"]) == 50000
    assert script.parse_peak("h200-bf16") == script.Peak("h200-bf16", "bf16", 989.0)
    assert script.parse_peak("2.5").tflops == 2.5
    for bad in ("h100", "-1", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            script.parse_peak(bad)
    args = script.parser().parse_args(["--quick", "--measure", "--tables", "phases"])
    script.main(args)
    out = capsys.readouterr().out
    assert "### FLOP floor of each phase's epoch" in out
    assert "| cpu | vae | 2 | 60,000 |" in out
    assert "| cpu | glow | 2 | 60,000 |" in out
    assert "### Measured training steps against the floor, on cpu" in out
    assert "| cpu | glow | eager |" in out
    assert "| this CPU |" in out


def test_samples_are_written_as_uint8_and_scored_as_the_evaluation_draws_them(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("fid_from_samples")
    from tests.helpers import tiny_vae

    vae = tiny_vae()
    vae.save(tmp_path / "model.pt")
    out = tmp_path / "out" / "samples_T0.5.pt"
    script.main(
        script.parser().parse_args(
            ["--write-from", str(tmp_path / "model.pt"), "--n", "20", str(out)]
        )
    )
    samples = torch.load(out, weights_only=True)
    assert samples.dtype == torch.uint8
    assert samples.shape == (20, 1, 28, 28)
    again = script.draw_samples(tmp_path / "model.pt", 20, 0.5, 0, "cpu")
    assert torch.equal(samples, again)  # seeded: the same samples
    args = script.parser().parse_args([str(out), "--n", "20", "--quiet"])
    network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    script.score(args, network, tmp_path / "cache")
    table = capsys.readouterr().out
    assert "| 20 | 0.5 | — |" in table
    assert "| 19.70 |" in table
    with pytest.raises(SystemExit, match="fewer than --n 30"):
        script.load_samples(out, 30)


@pytest.mark.slow
def test_the_demo_at_an_equal_budget_runs_quick(capsys, monkeypatch):
    """Both smoke runs (eager and compiled) train, evaluate and give one row each."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("bench_demo_budget")
    script.main(script.parser().parse_args(["--quick"]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| eager", "| compiled"]
