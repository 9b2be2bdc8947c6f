"""The pyro-vaeflow console script, end to end on a tiny Fashion-MNIST run."""

from __future__ import annotations

import json

import pytest

from pyro_vaeflow.cli import load_run_preset, main

TINY_RUN = ["--train-images", "48", "--vae-epochs", "1", "--glow-epochs", "1", "--quiet"]
TINY_EVAL = ["--no-fid", "--elbo-images", "16", "--is-images", "2", "--is-samples", "4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    assert main(["train", "--run-dir", str(folder), *TINY_RUN]) == 0
    return folder


def test_train_writes_the_model_checkpoints_and_config(run_dir):
    for name in ("model.pt", "vae.ckpt", "glow.ckpt", "config.json", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    preset = load_run_preset(run_dir)
    assert (preset.name, preset.epochs, preset.train_images) == ("cpu", {"vae": 1, "glow": 1}, 48)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(row["phase"], row["epoch"]) for row in rows if "kind" not in row] == [
        ("vae", 1),
        ("glow", 1),
    ]


def test_evaluate_writes_metrics_and_figures(run_dir, capsys):
    assert main(["evaluate", "--run-dir", str(run_dir), "--quiet", *TINY_EVAL]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test_elbo_bpd"] < 16
    assert metrics["test_is_samples"] == 4
    assert "fid" not in metrics
    for name in ("samples", "sharpening", "interpolation", "training_curves"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert "| test ELBO" in capsys.readouterr().out


def test_sample_writes_a_png(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "--run-dir", str(run_dir), "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_into_an_existing_run_needs_resume(run_dir, capsys):
    assert main(["train", "--run-dir", str(run_dir), *TINY_RUN]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(run_dir), *TINY_RUN, "--resume"]) == 0


def test_resume_with_another_configuration_is_refused(run_dir, capsys):
    args = ["train", "--run-dir", str(run_dir), *TINY_RUN, "--lr", "0.5", "--resume"]
    assert main(args) == 2
    assert "another configuration" in capsys.readouterr().err


def test_a_missing_run_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--run-dir", str(tmp_path / "nothing"), "--no-fid"]) == 2
    assert "config.json not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "epochs"),
    [
        ("two-stage-cpu", ["--epochs", "first=1", "--epochs", "second=1"]),
        ("glow-cpu", ["--epochs", "all=1"]),
        ("vlae-binary-cpu", ["--vae-epochs", "1"]),
    ],
)
def test_baseline_presets_train_evaluate_and_sample(preset, epochs, tmp_path, capsys):
    run = ["--run-dir", str(tmp_path), "--quiet"]
    tiny = ["--train-images", "32", *epochs]
    assert main(["train", "--preset", preset, *run, *tiny]) == 0
    assert main(["evaluate", *run, *TINY_EVAL]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["test_elbo_bpd"] < (2 if preset == "vlae-binary-cpu" else 16)
    assert (tmp_path / "figures" / "samples.png").stat().st_size > 1000
    out = tmp_path / "grid.png"
    assert main(["sample", "--run-dir", str(tmp_path), "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epochs_per_phase_and_the_old_flags(tmp_path, capsys):
    run = ["train", "--run-dir", str(tmp_path), "--train-images", "16", "--quiet"]
    assert main([*run, "--epochs", "vae=1", "--epochs", "glow=0", "--batch-size", "16"]) == 0
    assert load_run_preset(tmp_path).epochs == {"vae": 1, "glow": 0}
    assert not (tmp_path / "glow.ckpt").exists()
    with pytest.raises(SystemExit):
        main([*run, "--epochs", "vae=x"])
    assert "PHASE=N" in capsys.readouterr().err


def test_a_second_phase_flag_on_a_one_phase_preset_is_ignored_with_a_warning(tmp_path):
    args = ["train", "--preset", "glow-cpu", "--run-dir", str(tmp_path), "--glow-epochs", "3"]
    with pytest.warns(UserWarning, match="glow_epochs=3 is ignored"):
        assert main([*args, "--train-images", "16", "--vae-epochs", "0", "--quiet"]) == 0
