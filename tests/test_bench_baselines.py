"""The tables of trained baselines run end to end with ``--quick`` and resume."""

from __future__ import annotations

import json

import pytest

from pyro_vaeflow.presets import override
from pyro_vaeflow.run import train
from pyro_vaeflow.rundir import RunDir
from tests.test_benchmarks import BENCHMARKS, load_script


def run(name, root, capsys, monkeypatch, *extra):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script(name)
    script.main(script.parser().parse_args(["--quick", "--quiet", "--root", str(root), *extra]))
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "runs"),
    [
        ("bench_vs_glow", ["vaeflow", "glow", "two-stage"]),
        ("bench_prior", ["two-stage", "flow-prior"]),
        ("bench_ablations", ["vaeflow", "vaeflow-isotropic", "vaeflow-joint"]),
        ("bench_autoregressive", ["vaeflow", "vlae", "agave"]),
    ],
)
def test_table_runs_quick_and_a_second_call_only_reads_back(
    name, runs, tmp_path, capsys, monkeypatch
):
    first = run(name, tmp_path, capsys, monkeypatch)
    assert first.startswith("Command: ")
    assert first.count("|---") >= 1
    stamps = {run_name: (tmp_path / run_name / "metrics.json").stat().st_mtime for run_name in runs}
    second = run(name, tmp_path, capsys, monkeypatch)
    assert stamps == {r: (tmp_path / r / "metrics.json").stat().st_mtime for r in runs}
    assert timeless_rows(second) == timeless_rows(first)


def timeless_rows(output: str) -> list[list[str]]:
    """The cells of every table row, without the columns of measured times (re-timed on every
    call: ``s/epoch``, ``... (s)``) and without the timing tables of Fashion-MNIST epochs."""
    rows, header = [], []
    lines = output.splitlines()
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if following.startswith("|---"):
            header = cells
        elif line.startswith("| ") and "Fashion-MNIST" not in line:
            timed = [i for i, name in enumerate(header) if "s/epoch" in name or "(s)" in name]
            rows.append([cell for i, cell in enumerate(cells) if i not in timed])
    return rows


def test_a_stopped_run_resumes_within_its_budget(tmp_path, capsys, monkeypatch):
    """A run interrupted after its first phase continues with phase 2 only."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    baselines = load_script("baselines")
    script = load_script("bench_vs_glow")
    args = script.parser().parse_args(["--quick", "--quiet", "--root", str(tmp_path)])
    preset = baselines.bench_preset(args, "vaeflow")
    train(override(preset, epochs={"vae": 1, "glow": 0}), tmp_path / "vaeflow", progress=False)
    (tmp_path / "vaeflow" / "model.pt").unlink()  # stopped before the end
    metrics = baselines.run_one(args, "vaeflow")
    assert metrics["epochs"] == {"vae": 1, "glow": 1}
    assert json.loads((tmp_path / "vaeflow" / "metrics.json").read_text()) == metrics


def test_a_partial_evaluation_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    baselines = load_script("baselines")
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "metrics.json").write_text(json.dumps({"test_elbo_bpd": 5.0, "partial": True}))
    assert not baselines._fresh(RunDir(tmp_path))
    (tmp_path / "metrics.json").write_text('{"test_elbo_bpd": 5.')
    with pytest.raises(ValueError, match=r"metrics\.json is not valid JSON"):
        baselines._fresh(RunDir(tmp_path))  # named, not taken for an unfinished one
    (tmp_path / "metrics.json").write_text(json.dumps({"test_elbo_bpd": 5.0}))
    assert baselines._fresh(RunDir(tmp_path))
