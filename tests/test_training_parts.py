"""The parts of the training engine, each on its own: options, learning-rate schedule, early
stopping, time budget, phase checkpoint and the loss logged every few steps."""

from __future__ import annotations

import copy
import io
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import (
    EarlyStopping,
    FitConfig,
    LearningRateSchedule,
    MultiTensorAdam,
    PhaseCheckpoint,
    TimeBudget,
    fit,
)
from tests.helpers import fashion_pixels, tiny_vae


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"n_bits": 9}, "n_bits"),
        ({"num_particles": 0}, "num_particles"),
        ({"log_every": 0}, "log_every"),
        ({"patience": -1}, "patience"),
        ({"time_budget": math.nan}, "time_budget"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**options)


def test_the_limits_of_earlier_versions_are_accepted():
    config = FitConfig(time_budget=math.inf, lr_halve_every=0, patience=0)
    assert LearningRateSchedule(1.0, config.lr_halve_every).epoch_rate(9) == 1.0
    assert TimeBudget(config.time_budget).allows_epoch([{"seconds": 1e9}])


def test_the_bit_depth_is_the_models_unless_given():
    class Binary(torch.nn.Module):  # a model of 1-bit pixels, observed through Normal noise
        n_bits, num_dims = 1, 4

        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Linear(1, 1)

        def model(self, x):
            pyro.module("loc", self.loc)
            with pyro.plate("data", len(x)):
                loc = self.loc(torch.ones(len(x), 1)).expand(len(x), 4).reshape(x.shape)
                pyro.sample("x", dist.Normal(loc, 1.0).to_event(3), obs=x)

        def guide(self, x):
            pass

    data, model = torch.zeros(8, 1, 2, 2), Binary()
    (one,) = fit(copy.deepcopy(model), data, epochs=1, batch_size=8, progress=False)
    (eight,) = fit(model, data, epochs=1, batch_size=8, n_bits=8, progress=False)
    assert eight["train_bpd"] - one["train_bpd"] == pytest.approx(7.0)


def test_an_unknown_option_lists_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown training options \['epoch'\].*'epochs'"):
        fit(tiny_vae(), fashion_pixels(8), "vae", epoch=3)


def test_keyword_options_override_the_config():
    config = FitConfig(epochs=3, lr=0.5, progress=False)
    history = fit(tiny_vae(), fashion_pixels(16), "vae", 2, 8, config=config, lr=1e-3)
    assert [row["epoch"] for row in history] == [1, 2]
    assert {row["lr"] for row in history} == {1e-3}
    assert [row["step"] for row in history] == [2, 4]


def test_the_schedule_warms_up_then_halves():
    schedule = LearningRateSchedule(1.0, halve_every=2, warmup_steps=10, steps_per_epoch=4)
    rates = [schedule.at(epoch, step) for epoch in range(5) for step in range(4)]
    assert rates[:8] == pytest.approx([k / 10 for k in range(1, 9)])  # epochs 0 and 1
    assert rates[8:12] == pytest.approx([0.45, 0.5, 0.5, 0.5])  # epoch 2: halved, warm

    assert rates[16:] == [0.25] * 4
    assert [schedule.epoch_rate(e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert LearningRateSchedule(1e-3).at(7, 3) == 1e-3


def test_early_stopping_keeps_the_best_weights_and_restores_them():
    model = torch.nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    assert not stopping.update(3.0, model)
    best = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not stopping.update(3.5, model)
    assert stopping.update(3.2, model)
    stopping.restore_best(model)
    assert torch.equal(model.weight, best)
    copy = EarlyStopping(patience=2)
    copy.load_state_dict(stopping.state_dict())
    assert (copy.best_bpd, copy.stale) == (3.0, 2)
    assert not EarlyStopping(None).update(1.0, model)


def test_the_time_budget_refuses_an_epoch_that_would_overrun():
    assert TimeBudget(None).allows_epoch([{"seconds": 1e9}])
    assert TimeBudget(60.0).allows_epoch([])
    assert TimeBudget(60.0).allows_epoch([{"seconds": 1.0}])
    assert not TimeBudget(60.0).allows_epoch([{"seconds": 120.0}])
    assert not TimeBudget(-1.0).allows_epoch([])


def test_a_phase_checkpoint_restores_model_optimiser_generators_and_stopping():
    model, shuffle = torch.nn.Linear(2, 1), torch.Generator().manual_seed(3)
    optim, stopping = MultiTensorAdam(lr=0.1), EarlyStopping(patience=3)
    with pyro.get_param_store().scope():  # one step, so that Adam has a state to keep
        pyro.module("linear", model)
        model(torch.ones(2)).sum().backward()
        optim(set(model.parameters()))
    stopping.update(2.0, model)
    torch.manual_seed(7)
    saved = PhaseCheckpoint.capture(model, optim, shuffle, stopping, [{"epoch": 1}], 1, False)
    expected = (torch.rand(3), torch.rand(3, generator=shuffle))
    payload = json.loads(json.dumps(saved.to_payload(), default=lambda t: t.tolist()))
    assert payload["epoch"] == 1
    assert payload["history"] == [{"epoch": 1}]

    other, other_shuffle = torch.nn.Linear(2, 1), torch.Generator().manual_seed(0)
    other_optim, other_stopping = MultiTensorAdam(lr=0.1), EarlyStopping(patience=3)
    stream = io.BytesIO()  # through a file's bytes, as a resume reads it
    torch.save(saved.to_payload(), stream)
    stream.seek(0)
    PhaseCheckpoint.from_payload(torch.load(stream, weights_only=True)).restore(
        other, other_optim, other_shuffle, other_stopping
    )
    assert torch.equal(other.weight, model.weight)
    for each, each_optim in ((model, optim), (other, other_optim)):  # Adam's second step
        with pyro.get_param_store().scope():
            pyro.module("linear", each)
            each.zero_grad()
            each(torch.ones(2)).sum().backward()
            each_optim(set(each.parameters()))
    assert torch.equal(other.weight, model.weight)  # a fresh Adam would step differently
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, generator=other_shuffle), expected[1])
    assert other_stopping.best_bpd == 2.0


def test_the_loss_is_logged_every_few_steps(tmp_path):
    history = fit(
        tiny_vae(),
        fashion_pixels(40),
        "vae",
        epochs=2,
        batch_size=8,
        log_every=3,
        progress=False,
        run_dir=tmp_path,
    )
    run = RunDir(tmp_path)
    steps = run.steps()
    assert [row["step"] for row in steps] == [3, 6, 9]  # 5 steps an epoch, 10 in all
    assert {row["epoch"] for row in steps} == {1, 2}
    assert all(row["phase"] == "vae" and 0 < row["train_bpd"] < 20 for row in steps)
    assert run.history() == [json.loads(json.dumps(row)) for row in history]


def test_validation_does_not_change_training():
    pixels, held_out = fashion_pixels(32), fashion_pixels(48)[32:]
    torch.manual_seed(0)
    plain = fit(tiny_vae(), pixels, "vae", epochs=2, batch_size=16, progress=False)
    torch.manual_seed(0)
    model = tiny_vae()
    validated = fit(model, pixels, "vae", 2, 16, val_data=held_out, progress=False)
    assert [r["train_bpd"] for r in validated] == [r["train_bpd"] for r in plain]
    assert all(0 < r["val_bpd"] < 20 for r in validated)
