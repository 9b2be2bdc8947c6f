"""The run layer for every architecture: phase schedules, budgets, resumes, evaluation."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from pyro_vaeflow.models import TwoStageVAE, VAEFlow, build_model, load_model
from pyro_vaeflow.presets import get_preset, override
from pyro_vaeflow.run import evaluate, make_figures, schedule, summary_table, train
from tests.helpers import TINY, TINY_MODELS, TINY_TWO_STAGE

evaluation = importlib.import_module("pyro_vaeflow.run.evaluation")

EVALUATION = {"elbo_images": 8, "is_images": 2, "is_samples": 4}


def phase_rows(table: str) -> list[str]:
    """The phases of a summary table's training-time rows."""
    rows = [line for line in table.splitlines() if line.startswith("| phase ")]
    return [row.removeprefix("| phase ").split(":")[0] for row in rows]


def tiny(name: str, model: dict, **fields):
    preset = get_preset(name)
    options = {"train_images": 32, "batch_size": 16, "epochs": dict.fromkeys(preset.epochs, 1)}
    return override(preset, model=model, **{**options, **EVALUATION, **fields})


@pytest.mark.parametrize(
    ("name", "model", "fields", "expected"),
    [
        ("cpu", {"latent_dim": 4, **TINY}, {}, [("vae", 1), ("glow", 1)]),
        ("cpu", {"latent_dim": 4, **TINY}, {"epochs": {"joint": 2}}, [("joint", 2)]),
        ("cpu", {"latent_dim": 4, **TINY}, {"joint": True}, [("joint", 2)]),
        ("cpu", {"latent_dim": 4, **TINY}, {"epochs": {"vae": 1, "glow": 0}}, [("vae", 1)]),
        ("cpu", {"latent_dim": 4, **TINY, "glow_depth": 0}, {}, [("vae", 1)]),
        ("two-stage-cpu", TINY_TWO_STAGE, {}, [("first", 1), ("second", 1)]),
    ],
)
def test_schedule(name, model, fields, expected):
    preset = tiny(name, model, **fields)
    built = TwoStageVAE((1, 28, 28), **model) if name != "cpu" else VAEFlow((1, 28, 28), **model)
    assert schedule(preset, built) == expected


def test_a_phase_the_model_does_not_declare_is_refused():
    preset = tiny("cpu", {"latent_dim": 4, **TINY}, epochs={"vae": 1, "second": 1})
    with pytest.raises(ValueError, match=r"phases \['second'\].*VAEFlow does not have"):
        schedule(preset, VAEFlow((1, 28, 28), **preset.model))


def test_a_two_stage_run_trains_both_stages_evaluates_and_draws(tmp_path):
    preset = tiny("two-stage-cpu", TINY_TWO_STAGE)
    _, history = train(preset, tmp_path, progress=False)
    assert [row["phase"] for row in history] == ["first", "second"]
    loaded = load_model(tmp_path / "model.pt")
    assert isinstance(loaded, TwoStageVAE)
    metrics = evaluate(loaded, preset, tmp_path, fid=False, progress=False)
    assert 0 < metrics["test_elbo_bpd"] < 16
    assert metrics["test_is_bpd"] < metrics["test_elbo_bpd"] + 0.5
    assert "test_elbo_bpd_without_glow" not in metrics
    assert json.loads((tmp_path / "metrics.json").read_text())["test_is_samples"] == 4
    figures = make_figures(loaded, history, tmp_path)
    assert sorted(path.stem for path in figures) == ["interpolation", "samples", "training_curves"]
    assert phase_rows(summary_table(metrics, history)) == ["first", "second"]


def test_a_joint_run_trains_one_phase(tmp_path):
    preset = tiny("cpu", {"latent_dim": 4, **TINY}, joint=True)
    _, history = train(preset, tmp_path, progress=False)
    assert [row["phase"] for row in history] == ["joint", "joint"]
    assert (tmp_path / "joint.ckpt").exists()
    assert not (tmp_path / "vae.ckpt").exists()
    assert phase_rows(summary_table({}, history)) == ["joint"]


def test_the_time_budget_counts_epochs_across_resumes(tmp_path):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    _, history = train(preset, tmp_path, progress=False)
    spent = sum(row["seconds"] for row in history)
    longer = override(preset, epochs={"vae": 3, "glow": 3}, time_budget=spent / 2)
    _, resumed = train(longer, tmp_path, resume=True, progress=False)
    assert resumed == history  # the budget was already spent: no epoch more
    _, extended = train(override(longer, time_budget=1e9), tmp_path, resume=True, progress=False)
    assert [row["phase"] for row in extended] == ["vae", "glow", "glow", "glow"]


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_single_phase_baselines_train_evaluate_and_draw(name, tmp_path):
    preset = tiny(name, TINY_MODELS[name], elbo_images=2)  # IS and ELBO on the same images
    _, history = train(preset, tmp_path, progress=False)
    assert [row["phase"] for row in history] == ["all"]
    model = load_model(tmp_path / "model.pt")
    assert model.architecture == preset.architecture
    metrics = evaluate(model, preset, fid=False, progress=False)
    n_bits = 1 if preset.binarize else 8
    assert 0 < metrics["test_elbo_bpd"] < 2 * n_bits
    assert metrics["test_is_bpd"] <= metrics["test_elbo_bpd"] + 1e-4
    figures = make_figures(model, history, tmp_path)
    assert sorted(path.stem for path in figures) == ["samples", "training_curves"]
    assert phase_rows(summary_table(metrics, history)) == ["all"]


@pytest.mark.parametrize(
    ("name", "glow_enabled", "expected"),
    [("vaeflow", True, True), ("vaeflow", False, False), ("glow-cpu", True, True)]
    + [(name, True, False) for name in ("vlae-binary-cpu", "agave-cpu")],
)
def test_fid_records_a_temperature_only_where_the_samples_use_one(name, glow_enabled, expected):
    if name == "vaeflow":
        model = VAEFlow((1, 28, 28), 4, **TINY)
        model.glow_enabled = glow_enabled
    else:
        preset = get_preset(name)
        model = build_model(preset.architecture, preset.image_shape, **TINY_MODELS[name])
    assert model.fid_samplers(2, 0.5)["fid"].uses_temperature is expected


@pytest.mark.parametrize(
    ("vae_means", "expected"), [(True, ["fid", "fid_vae_mean"]), (False, ["fid"])]
)
def test_the_decoder_means_are_scored_only_when_asked(vae_means, expected):
    model = VAEFlow((1, 28, 28), 4, **TINY).eval()
    samplers = model.fid_samplers(3, 0.5, main_only=not vae_means)
    assert sorted(samplers) == expected
    assert all(sampler.draw(3).shape == (3, 1, 28, 28) for sampler in samplers.values())


def _stopped_during_importance_sampling(model, preset, run_dir, monkeypatch) -> None:
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "_importance", stop)
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, preset, run_dir, fid=False, progress=False)


def test_a_stopped_evaluation_keeps_its_finished_stages_and_continues(
    tmp_path, monkeypatch, capsys
):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    model = VAEFlow((1, 28, 28), **preset.model)
    uninterrupted = evaluate(model, preset, fid=False, progress=False)
    _stopped_during_importance_sampling(model, preset, tmp_path, monkeypatch)
    partial = json.loads((tmp_path / "metrics.json").read_text())
    assert partial["partial"] is True
    assert partial["test_elbo_bpd"] == uninterrupted["test_elbo_bpd"]
    assert "test_is_bpd" not in partial
    elbo_calls = []
    monkeypatch.setattr(evaluation, "_elbo_metrics", lambda *a: elbo_calls.append(a) or {})
    resumed = evaluate(model, preset, tmp_path, fid=False, progress=True)
    assert elbo_calls == []  # the finished stage was kept, not recomputed
    assert "kept test_elbo_bpd" in capsys.readouterr().out
    for key in ("test_elbo_bpd", "test_elbo_bpd_without_glow", "test_is_bpd", "test_is_mean_ess"):
        assert resumed[key] == uninterrupted[key], key
    assert "partial" not in json.loads((tmp_path / "metrics.json").read_text())


def test_a_stopped_evaluation_without_fid_continues_with_fid(tmp_path, monkeypatch):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    model = VAEFlow((1, 28, 28), **preset.model)
    _stopped_during_importance_sampling(model, preset, tmp_path, monkeypatch)
    spent = json.loads((tmp_path / "metrics.json").read_text())["evaluation_seconds"]
    monkeypatch.setattr(evaluation, "fid_scores", lambda *a, **k: {"fid": 12.5})
    monkeypatch.setattr(evaluation, "_elbo_metrics", lambda *a: pytest.fail("ELBO recomputed"))
    metrics = evaluate(model, preset, tmp_path, progress=False)
    assert metrics["fid"] == 12.5
    assert "test_is_bpd" in metrics
    assert metrics["evaluation_seconds"] > spent


@pytest.mark.parametrize("change", ["weights", "settings", "finished"])
def test_an_evaluation_continues_only_the_same_unfinished_one(change, tmp_path, monkeypatch):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    model = VAEFlow((1, 28, 28), **preset.model)
    _stopped_during_importance_sampling(model, preset, tmp_path, monkeypatch)
    if change == "weights":
        with torch.no_grad():
            next(model.parameters()).add_(0.1)
    elif change == "settings":
        preset = override(preset, elbo_images=4)
    else:
        evaluate(model, preset, tmp_path, fid=False, progress=False)
    elbo_calls = []
    original = evaluation._elbo_metrics
    monkeypatch.setattr(
        evaluation, "_elbo_metrics", lambda *a: elbo_calls.append(a) or original(*a)
    )
    evaluate(model, preset, tmp_path, fid=False, progress=False)
    assert len(elbo_calls) == 1


@pytest.mark.parametrize("content", [b'{"partial": tr', b"[1, 2]", b"null", b"\xff\xfe"])
def test_an_unreadable_metrics_file_is_named_and_kept(content, tmp_path):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    (tmp_path / "metrics.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"metrics\.json (is not valid JSON|holds a)"):
        evaluate(VAEFlow((1, 28, 28), **preset.model), preset, tmp_path, fid=False)
    assert (tmp_path / "metrics.json").read_bytes() == content


def test_the_summary_table_labels_the_models_own_metrics():
    labels = {
        "test_elbo_bpd_without_glow": "test ELBO without the Glow layer (bits/dim)",
        "fid": "FID of Glow samples",
    }
    metrics = {
        "test_elbo_bpd": 4.5,
        "test_elbo_bpd_without_glow": 5.0,
        "test_is_bpd": 4.4,
        "test_is_samples": 10,
        "test_is_images": 2,
        "fid": 100.0,
        "fid_samples": 8,
        "fid_temperature": 0.5,
        "labels": labels,
        "evaluation_seconds": 120.0,
    }
    history = [{"phase": "vae", "seconds": 60.0}, {"phase": "glow", "seconds": 30.0}] * 2
    assert summary_table(metrics, history).splitlines()[2:] == [
        "| test ELBO (bits/dim, lower is better) | 4.500 |",
        "| test ELBO without the Glow layer (bits/dim) | 5.000 |",
        "| importance-sampled test NLL (bits/dim) (K=10, 2 images) | 4.400 |",
        "| FID of Glow samples (8 samples, T=0.5) | 100.00 |",
        "| phase vae: epochs, minutes | 2, 2.0 |",
        "| phase glow: epochs, minutes | 2, 1.0 |",
        "| evaluation minutes | 2.0 |",
    ]
    del metrics["labels"]  # as an evaluation of an earlier version wrote it
    assert summary_table(metrics, history) == summary_table({**metrics, "labels": labels}, history)


def test_the_summary_of_an_earlier_evaluation_keeps_its_rows():
    metrics = {"test_elbo_bpd_without_glow": 5.0, "fid": 100.0, "fid_vae_mean": 110.0}
    table = summary_table({**metrics, "fid_samples": 8})
    assert "| test ELBO without the Glow layer (bits/dim) | 5.000 |" in table
    assert "| FID of Glow samples (8 samples) | 100.00 |" in table
    assert "| FID of the VAE means (8 samples) | 110.00 |" in table


def test_the_evaluation_records_the_labels_of_the_models_metrics(tmp_path):
    preset = tiny("cpu", {"latent_dim": 4, **TINY})
    metrics = evaluate(VAEFlow((1, 28, 28), **preset.model), preset, fid=False, progress=False)
    assert metrics["labels"] == {
        "test_elbo_bpd_without_glow": "test ELBO without the Glow layer (bits/dim)",
        "fid": "FID of Glow samples",
        "fid_vae_mean": "FID of the VAE means",
    }
    assert metrics["test_elbo_bpd_without_glow"] != metrics["test_elbo_bpd"]


def test_a_preset_with_validation_images_scores_every_epoch_of_every_phase(tmp_path):
    preset = tiny("cpu", {"latent_dim": 4, **TINY}, train_images=48, val_images=16)
    _, history = train(preset, tmp_path, progress=False)
    assert [row["phase"] for row in history] == ["vae", "glow"]
    assert all(0 < row["val_bpd"] < 20 for row in history)
    with pytest.raises(ValueError, match="leaves no training images"):
        train(override(preset, val_images=48), tmp_path / "other", progress=False)
