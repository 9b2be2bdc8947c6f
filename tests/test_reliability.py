"""Reliability: one writer per run directory, a graceful stop with a mid-epoch checkpoint that
resumes bit-identically, a corrupt newest checkpoint that falls back to the previous one, and
write errors (a full disk) that lose nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint, previous_path
from pyro_vaeflow.cli import main
from pyro_vaeflow.data import DynamicallyBinarized
from pyro_vaeflow.files import WriteError
from pyro_vaeflow.interrupt import GracefulStop, Interrupted
from pyro_vaeflow.lock import RunLock, RunLockedError
from pyro_vaeflow.models import load_model
from pyro_vaeflow.presets import get_preset, override
from pyro_vaeflow.run import evaluate, make_figures, train
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import fit
from tests.helpers import TINY, fashion_pixels, tiny_vae

DATA = {
    "pixels": lambda: fashion_pixels(48),
    "binarised": lambda: DynamicallyBinarized(fashion_pixels(48), torch.Generator().manual_seed(1)),
}
"""The training data of the phase tests: a tensor (batched by index) and a ``Dataset`` with a
generator of its own (batched by a ``DataLoader``)."""


def at_call(module: torch.nn.Module, k: int, action) -> torch.utils.hooks.RemovableHandle:
    """Run ``action()`` during the ``k``-th forward of ``module`` (a torch forward hook)."""
    calls = [0]

    def hook(*_) -> None:
        calls[0] += 1
        if calls[0] == k:
            action()

    return module.register_forward_hook(hook)


def send(signum: int):
    return lambda: os.kill(os.getpid(), signum)


def crash() -> None:
    raise RuntimeError("the process died here")


def phase(run_dir, data: str, resume=False, when=None, action=None, epochs=2, **options):
    """Train the ``"vae"`` phase of a tiny VAEFlow on 48 real images (6 steps an epoch)."""
    torch.manual_seed(0)
    model = tiny_vae()
    handle = at_call(model.encoder, when, action) if when else None
    try:
        history = fit(
            model,
            DATA[data](),
            "vae",
            epochs=epochs,
            batch_size=8,
            progress=False,
            run_dir=run_dir,
            resume=resume,
            log_every=4,
            **options,
        )
    finally:
        if handle is not None:
            handle.remove()
    return model, history


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    other = b.state_dict()
    return all(torch.equal(value, other[name]) for name, value in a.state_dict().items())


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("step", [3, 6, 10])  # in epoch 1, its last step, in epoch 2
def test_a_sigterm_keeps_the_epoch_and_resumes_bit_identically(tmp_path, data, step):
    whole, history = phase(tmp_path / "whole", data)
    with pytest.raises(Interrupted) as stopped:
        phase(tmp_path / "stopped", data, when=step, action=send(signal.SIGTERM))
    assert stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    saved = load_checkpoint(tmp_path / "stopped" / "vae.ckpt")
    if step % 6:  # stopped in the middle of an epoch: the checkpoint says where
        assert saved["position"]["step"] == step % 6
        assert f"step {step % 6} of 6" in stopped.value.kept
    else:
        assert saved["position"] is None
        assert saved["epoch"] == step // 6
    resumed, resumed_history = phase(tmp_path / "stopped", data, resume=True)
    assert same_weights(whole, resumed)
    assert without_seconds(resumed_history) == without_seconds(history)
    steps = [RunDir(tmp_path / name).steps() for name in ("whole", "stopped")]
    assert steps[0]
    assert steps[0] == steps[1]  # the step log's means too


def test_checkpoint_every_lets_a_crash_resume_from_the_middle_of_an_epoch(tmp_path):
    whole, _ = phase(tmp_path / "whole", "pixels")
    with pytest.raises(RuntimeError, match="died here"):  # every step checkpoints; step 5 dies
        phase(tmp_path / "crashed", "pixels", when=5, action=crash, checkpoint_every=1e-9)
    assert load_checkpoint(tmp_path / "crashed" / "vae.ckpt")["position"]["step"] == 4
    assert (
        load_checkpoint(previous_path(tmp_path / "crashed" / "vae.ckpt"))["position"]["step"] == 3
    )
    resumed, _ = phase(tmp_path / "crashed", "pixels", resume=True)
    assert same_weights(whole, resumed)


def ctrl_c_twice(asked: list) -> None:
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        asked.append(stop.requested)  # the first one only asks
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # not reached


def test_a_second_ctrl_c_stops_at_once():
    # Ctrl-C as in a terminal, even where the suite runs as a background job that ignores it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    asked = []
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            ctrl_c_twice(asked)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert asked == [signal.SIGINT]
    assert not isinstance(caught.value, Interrupted)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    whole, _ = phase(tmp_path / "whole", "pixels", epochs=3)
    phase(tmp_path / "run", "pixels", epochs=2)
    newest = tmp_path / "run" / "vae.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, history = phase(tmp_path / "run", "pixels", resume=True, epochs=3)
    said = " | ".join(str(warning.message) for warning in caught)
    assert re.search(r"vae\.ckpt is not a readable checkpoint.*from the previous", said), said
    assert "vae.ckpt did not match the hash recorded" in said  # and at the next save:
    assert [row["epoch"] for row in history] == [1, 2, 3]  # epoch 2 again, from epoch 1's
    assert same_weights(whole, resumed)
    assert (tmp_path / "run" / "vae.ckpt.corrupt").is_file()  # moved aside, not deleted


def test_a_checkpoint_that_no_longer_matches_its_hash_is_not_trusted(tmp_path):
    run = RunDir(tmp_path)
    for epoch in (1, 2):
        run.save_checkpoint("vae", {"epoch": epoch})
    path = run.checkpoint_path("vae")
    other = RunDir(tmp_path / "other")
    other.save_checkpoint("vae", {"epoch": 7})
    path.write_bytes(other.checkpoint_path("vae").read_bytes())  # loads, but was not written here
    with pytest.warns(UserWarning, match="SHA-256 is not the one recorded"):
        assert run.load_checkpoint("vae")["epoch"] == 1
    previous_path(path).write_bytes(b"garbage")
    with pytest.raises(
        CheckpointError, match=r"vae\.ckpt is corrupt.*vae\.ckpt\.prev is not a readable"
    ):
        run.load_checkpoint("vae")


def hold_lock(path) -> subprocess.Popen:
    """Another process holding ``path``'s run lock until it is killed."""
    code = (
        "import sys, time\nfrom pyro_vaeflow.lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path, capsys):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(
            RunLockedError, match=f"PID {holder.pid} on host {socket.gethostname()}"
        ):
            RunLock(tmp_path / "run").acquire()
        assert main(["train", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
        assert f"in use by another process (PID {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.lock"]  # no writes
    finally:
        holder.kill()  # as kill -9: the kernel releases the lock with the process
        holder.wait()
        holder.stdout.close()
    with RunLock(tmp_path / "run"):
        pass


def test_taking_the_lock_removes_what_a_killed_write_left(tmp_path):
    leftovers = [tmp_path / ".vae.ckpt.k3j2.tmp", tmp_path / "figures" / ".samples.png.x.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("the user's")
    with RunLock(tmp_path):
        assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "notes.tmp").exists()


PRESET = override(
    get_preset("cpu"),
    model={"latent_dim": 4, **TINY},
    train_images=32,
    batch_size=8,
    epochs={"vae": 2, "glow": 1},
    elbo_images=8,
    is_images=2,
    is_samples=4,
)


def run_all(run_dir, resume=False):
    """Train, evaluate (without FID) and draw the figures of a tiny cpu preset."""
    model, history = train(PRESET, run_dir, resume=resume, progress=False)
    evaluate(model, PRESET, run_dir, fid=False, progress=False)
    make_figures(model, history, run_dir)
    return model


def intact(run_dir) -> None:
    """Every file of the run reads back, and no temporary file is left."""
    run = RunDir(run_dir)
    for path in run.path.glob("*.ckpt*"):
        if path.suffix in (".ckpt", ".prev"):
            load_checkpoint(path)
    for line in run.log_path.read_text().splitlines() if run.log_path.exists() else []:
        json.loads(line)
    if run.config_path.exists():
        run.read_config()
    run.read_metrics()
    assert not list(run.path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("fault", "stops"),
    [
        ("enospc:vae.ckpt:1", True),
        ("eio:glow.ckpt.sha256:0", True),
        ("enospc:metrics.jsonl:1", True),
        ("enospc:config.json:0", True),
        ("enospc:model.pt:0", True),
        ("enospc:metrics.json:1", True),
        ("enospc:samples.png:0", False),
    ],
)
def test_a_full_disk_loses_nothing_and_the_run_resumes(tmp_path, monkeypatch, fault, stops):
    clean = run_all(tmp_path / "clean")
    monkeypatch.setenv("PYRO_VAEFLOW_FAULT", fault)
    name = fault.split(":")[1]
    if stops:
        with pytest.raises(WriteError, match=f"could not write .*{name} .*intact") as caught:
            run_all(tmp_path / "run")
        assert caught.value.errno in (28, 5)  # ENOSPC, EIO
    else:
        with pytest.warns(UserWarning, match=f"could not write .*{name}"):
            run_all(tmp_path / "run")
    intact(tmp_path / "run")
    monkeypatch.delenv("PYRO_VAEFLOW_FAULT")
    resumed = run_all(tmp_path / "run", resume=True)
    assert same_weights(clean, resumed)
    assert same_weights(clean, load_model(tmp_path / "run" / "model.pt"))
    intact(tmp_path / "run")
