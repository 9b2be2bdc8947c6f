"""fit(): phases, freezing, non-finite steps, checkpoints and exact resume."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_vaeflow.checkpoint import CheckpointError
from pyro_vaeflow.training import (
    Batches,
    GuardedSVI,
    MultiTensorAdam,
    NonFiniteLossError,
    fit,
    phase,
)
from tests.helpers import changed, fashion_images, fashion_pixels, snapshot, tiny_vae
from tests.registry import perturb


def quick_fit(vae, phase_name, **kwargs):
    options = {"epochs": 1, "batch_size": 16, "lr": 1e-2, "progress": False}
    return fit(vae, fashion_pixels(32), phase_name, **{**options, **kwargs})


def test_glow_phase_keeps_everything_else_bit_identical():
    vae = tiny_vae()
    before = snapshot(vae)
    quick_fit(vae, "glow")
    assert changed(before, vae, "glow.")
    for part in ("encoder.", "decoder.", "decoder_scale.", "prior_flow."):
        assert changed(before, vae, part) == [], part


def test_vae_phase_trains_without_the_glow_layer():
    vae = tiny_vae()
    before = snapshot(vae)
    quick_fit(vae, "vae")
    assert changed(before, vae, "glow.") == []
    for part in ("encoder.", "decoder.", "prior_flow."):
        assert changed(before, vae, part), part
    assert vae.glow_enabled


def test_prior_phase_trains_only_the_prior_and_stops_early():
    vae = tiny_vae()
    before = snapshot(vae)
    history = quick_fit(vae, "prior", epochs=4, patience=1, lr=0.5)
    assert changed(before, vae, "prior_flow.")
    assert [name for name in before if not name.startswith("prior_flow.")] == [
        name for name in before if name not in changed(before, vae, "")
    ]
    assert all(row["val_bpd"] is not None for row in history)
    best = min(row["val_bpd"] for row in history)
    assert len(history) < 4 or history[-1]["val_bpd"] > best


def test_joint_phase_trains_everything():
    vae = perturb(tiny_vae(), scale=0.05)
    before = snapshot(vae)
    quick_fit(vae, "joint")
    for part in ("encoder.", "decoder.", "prior_flow.", "glow."):
        assert changed(before, vae, part), part


def test_phase_restores_requires_grad_and_rejects_unknown_phases():
    vae = tiny_vae(prior="normal", glow_depth=0)
    with phase(vae, "vae"):
        pass
    assert all(p.requires_grad for p in vae.parameters())
    with pytest.raises(ValueError, match="has no phase 'decoder'"), phase(vae, "decoder"):
        pass
    with pytest.raises(ValueError, match="Glow layer"), phase(vae, "glow"):
        pass
    with pytest.raises(ValueError, match="flow prior"), phase(vae, "prior"):
        pass


def test_non_finite_steps_are_skipped_then_training_stops():
    vae = tiny_vae()
    with torch.no_grad():
        vae.decoder.net[-1].bias.fill_(math.nan)
    before = snapshot(vae)
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        quick_fit(vae, "vae", max_consecutive_skipped=3, batch_size=4)
    for name, value in vae.state_dict().items():
        assert torch.equal(value, before[name]) or torch.isnan(before[name]).any(), name


def test_history_reports_bits_per_dim_and_learning_rate_schedule():
    history = quick_fit(tiny_vae(), "vae", epochs=3, lr=1e-3, lr_halve_every=2)
    assert [row["lr"] for row in history] == [1e-3, 1e-3, 5e-4]
    assert all(0 < row["train_bpd"] < 20 for row in history)


def test_checkpoints_and_metrics_are_written(tmp_path):
    quick_fit(tiny_vae(), "vae", epochs=2, run_dir=tmp_path)
    assert (tmp_path / "vae.ckpt").exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not list(tmp_path.glob(".*tmp"))


def test_resumed_training_matches_uninterrupted_training(tmp_path):
    torch.manual_seed(0)
    straight = tiny_vae()
    torch.manual_seed(0)
    interrupted = tiny_vae()
    quick_fit(straight, "vae", epochs=3, clip_norm=10.0)
    quick_fit(interrupted, "vae", epochs=2, run_dir=tmp_path, clip_norm=10.0)
    torch.manual_seed(123)
    resumed = tiny_vae()
    history = quick_fit(resumed, "vae", epochs=3, run_dir=tmp_path, resume=True, clip_norm=10.0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_resume_refuses_another_phase_and_corrupt_checkpoints(tmp_path):
    quick_fit(tiny_vae(), "vae", run_dir=tmp_path)
    (tmp_path / "glow.ckpt").write_bytes((tmp_path / "vae.ckpt").read_bytes())
    with pytest.raises(ValueError, match="'vae' checkpoint"):
        quick_fit(tiny_vae(), "glow", run_dir=tmp_path, resume=True)
    (tmp_path / "vae.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        quick_fit(tiny_vae(), "vae", run_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    "data",
    [
        fashion_pixels(10),
        fashion_images(10),
        TensorDataset(fashion_pixels(10), torch.zeros(10)),
    ],
    ids=["uint8", "float", "dataset"],
)
def test_batches_accept_pixels_floats_and_datasets(data):
    batches = list(Batches(data, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(b.dtype == torch.float32 and b.min() >= 0 and b.max() < 1 for b in batches)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (torch.zeros(0, 1, 28, 28, dtype=torch.uint8), ValueError, "empty"),
        (torch.zeros(4, 28, 28, dtype=torch.uint8), ValueError, r"\[N, C, H, W\]"),
        (torch.zeros(4, 1, 28, 28, dtype=torch.int64), ValueError, "uint8"),
        ([1, 2, 3], TypeError, "Dataset"),
    ],
    ids=["empty", "shape", "dtype", "list"],
)
def test_bad_training_data_raise(data, error, message):
    with pytest.raises(error, match=message):
        fit(tiny_vae(), data, "vae", progress=False)


def test_a_spent_time_budget_trains_nothing():
    vae = tiny_vae()
    before = snapshot(vae)
    assert quick_fit(vae, "vae", epochs=5, time_budget=0.0) == []
    assert changed(before, vae, "") == []


def test_time_budget_stops_before_an_epoch_that_would_overrun():
    history = quick_fit(tiny_vae(), "vae", epochs=5, time_budget=1e-9 + 0.0)
    assert len(history) <= 1


def test_a_phase_stopped_by_its_time_budget_continues_on_resume(tmp_path):
    quick_fit(tiny_vae(), "vae", epochs=1, run_dir=tmp_path)
    quick_fit(tiny_vae(), "vae", epochs=3, run_dir=tmp_path, resume=True, time_budget=0.0)
    history = quick_fit(tiny_vae(), "vae", epochs=3, run_dir=tmp_path, resume=True)
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_early_stopped_prior_phase_is_not_continued_on_resume(tmp_path):
    history = quick_fit(tiny_vae(), "prior", epochs=6, patience=1, lr=0.5, run_dir=tmp_path)
    resumed = quick_fit(
        tiny_vae(), "prior", epochs=6, patience=1, lr=0.5, run_dir=tmp_path, resume=True
    )
    assert len(resumed) == len(history)


def test_the_resumed_epoch_uses_the_scheduled_learning_rate(tmp_path):
    quick_fit(tiny_vae(), "vae", epochs=1, run_dir=tmp_path, lr=1e-3, lr_halve_every=1)
    vae = tiny_vae()
    fit(
        vae,
        fashion_pixels(32),
        "vae",
        epochs=2,
        batch_size=16,
        lr=1e-3,
        lr_halve_every=1,
        run_dir=tmp_path,
        resume=True,
        progress=False,
    )
    saved = torch.load(tmp_path / "vae.ckpt", weights_only=True)["optimizer"]
    rates = {group["lr"] for state in saved.values() for group in state["param_groups"]}
    assert rates == {5e-4}


def test_tensorboard_gets_the_epoch_scalars(tmp_path):
    quick_fit(tiny_vae(), "vae", epochs=1, run_dir=tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_warmup_raises_the_learning_rate_linearly(tmp_path):
    def last_rates():
        saved = torch.load(tmp_path / "vae.ckpt", weights_only=True)["optimizer"]
        return sorted({group["lr"] for state in saved.values() for group in state["param_groups"]})

    quick_fit(tiny_vae(), "vae", epochs=1, lr=1e-3, warmup_steps=3, run_dir=tmp_path)
    assert last_rates() == pytest.approx([2e-3 / 3])  # the 2nd of 3 warm-up steps
    quick_fit(tiny_vae(), "vae", epochs=2, lr=1e-3, warmup_steps=3, run_dir=tmp_path, resume=True)
    assert last_rates() == pytest.approx([1e-3])


def test_a_step_with_an_infinite_gradient_but_a_finite_loss_is_skipped():
    def model():
        p = pyro.param("p", torch.tensor([0.0, 1.0]))
        pyro.factor("f", p.sqrt().sum())  # finite at p = (0, 1), but d/dp sqrt(p) = inf at 0

    with pyro.get_param_store().scope():
        svi = GuardedSVI(model, lambda: None, MultiTensorAdam(lr=0.1), Trace_ELBO())
        loss = svi.step()
        assert math.isnan(loss)
        assert svi.skipped == 1
        assert pyro.param("p").tolist() == [0.0, 1.0]


def test_several_particles_train_and_change_the_estimate():
    one, three = (quick_fit(tiny_vae(), "vae", num_particles=k) for k in (1, 3))
    assert math.isfinite(three[-1]["train_bpd"])
    assert three[-1]["train_bpd"] != one[-1]["train_bpd"]


def test_registering_an_unknown_part_is_refused():
    with pytest.raises(AttributeError, match="no part 'decoderr'"):
        tiny_vae()._register("decoderr")


def test_a_model_that_registers_nothing_is_a_clear_error():
    class Unregistered(torch.nn.Module):
        num_dims = 784

        def __init__(self):
            super().__init__()
            self.mean = torch.nn.Parameter(torch.zeros(1, 28, 28))

        def model(self, x):  # forgets pyro.module, so SVI would train nothing
            with pyro.plate("data", len(x)):
                pyro.sample("x", pyro.distributions.Normal(self.mean, 1.0).to_event(3), obs=x)

        def guide(self, x):
            pass

    with pytest.raises(ValueError, match="nothing to train"):
        fit(Unregistered(), fashion_pixels(8), epochs=1, batch_size=8, progress=False)
