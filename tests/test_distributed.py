"""Data parallelism on CPU processes (gloo on loopback): 2 processes train as 1, agree, skip
together, evaluate as 1; and the CLI under ``torchrun`` trains, resumes and evaluates."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pyro_vaeflow.cli import main
from pyro_vaeflow.run import evaluate
from pyro_vaeflow.rundir import RunDir
from tests import distributed_workers as workers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 processes computed (``distributed_workers.worker``)."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(workers.worker, args=(2, free_port(), str(out)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", list(workers.CASES))
def test_two_processes_train_as_one_and_agree(ranks, case):
    single = workers.trained(case)
    for name, value in single.items():
        assert torch.equal(ranks[0][case][name], ranks[1][case][name]), name
        if value.is_floating_point():
            torch.testing.assert_close(ranks[0][case][name], value, rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", list(workers.CASES))
def test_each_step_follows_the_gradient_of_the_global_batch(ranks, case):
    single = workers.gradients(case)
    assert set(single) == set(ranks[0]["gradients"][case])
    for name, value in single.items():
        for result in ranks:
            torch.testing.assert_close(
                result["gradients"][case][name], value, rtol=1e-10, atol=1e-12
            )


def test_a_nan_on_one_rank_makes_every_rank_skip(ranks):
    for result in ranks:
        assert result["nan"]["skipped"] == 1
        assert result["nan"]["first"] != result["nan"]["first"]  # NaN, on both ranks
    for name, value in ranks[0]["nan"]["after_skip"].items():
        assert torch.equal(value, ranks[1]["nan"]["after_skip"][name])


def test_distributed_evaluation_equals_one_process(ranks):
    single = evaluate(workers.build("glow"), workers.GLOW_PRESET, fid=False, progress=False)
    for key in ("test_elbo_bpd", "test_is_bpd", "test_elbo_images", "test_is_images"):
        assert ranks[0]["evaluation"][key] == ranks[1]["evaluation"][key], key
        assert ranks[0]["evaluation"][key] == pytest.approx(single[key], rel=1e-12, abs=0), key


def test_validation_early_stopping_and_the_budget_are_one_decision(ranks):
    first, second = (result["prior"] for result in ranks)
    assert [row["val_bpd"] for row in first["history"]] == [
        row["val_bpd"] for row in second["history"]
    ]
    assert all(row["val_bpd"] > 0 for row in first["history"])
    for name, value in first["weights"].items():
        assert torch.equal(value, second["weights"][name]), name
    assert len(ranks[0]["budget"]) == len(ranks[1]["budget"]) == 1  # rank 0's budget, for both
    assert ranks[0]["alone"].shape == (2, 1, 28, 28)  # rank 0 alone made no collective


def test_a_global_batch_that_does_not_divide_is_refused(ranks):
    for result in ranks:
        assert "batch_size 7 is the global batch" in result["indivisible"]


def test_fid_gathers_every_ranks_samples(ranks):
    assert ranks[0]["fid"] == ranks[1]["fid"]  # rank 0's distance, broadcast
    assert ranks[0]["fid"]["fid_samples"] == 6
    assert ranks[0]["fid"]["fid"] > 0


def torchrun(processes: int, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(processes), "-m", "pyro_vaeflow", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finished(process: subprocess.Popen) -> str:
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, out
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its children (torchrun starts each worker in a session of its own)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):  # a process that has just ended
                continue
            if parent == pid:
                os.kill(int(entry.name), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


TRAIN = ["--train-images", "256", "--batch-size", "16", "--quiet", "--epochs", "vae=1"]


def weights(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)["model"]


def test_the_cli_under_torchrun_trains_resumes_and_evaluates(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    out = finished(torchrun(2, "train", "--run-dir", str(whole), *TRAIN, "--epochs", "glow=2"))
    assert out.count("trained:") == 1  # rank 0 prints
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    epochs = [(row["phase"], row["epoch"]) for row in rows if row.get("kind") != "step"]
    assert epochs == [("vae", 1), ("glow", 1), ("glow", 2)]  # written once, by rank 0
    saved = torch.load(whole / "glow.ckpt", weights_only=True)["rng"]
    assert len(saved["ranks"]) == 2  # every rank's random stream
    assert not torch.equal(saved["ranks"][0]["torch"], saved["ranks"][1]["torch"])

    stopped = torchrun(2, "train", "--run-dir", str(killed), *TRAIN, "--epochs", "glow=2")
    while not (killed / "glow.ckpt").exists() and stopped.poll() is None:
        time.sleep(0.05)  # killed in the glow phase: the resume restores each rank's stream
    kill_tree(stopped.pid)  # torchrun and its workers, as a scheduler would
    stopped.communicate()
    assert not (killed / "model.pt").exists()  # stopped in the middle
    finished(
        torchrun(2, "train", "--run-dir", str(killed), *TRAIN, "--epochs", "glow=2", "--resume")
    )
    for name, value in weights(whole).items():
        assert torch.equal(value, weights(killed)[name]), name

    # another number of processes (one, this one) continues the run
    assert main(["train", "--run-dir", str(whole), *TRAIN, "--epochs", "glow=3", "--resume"]) == 0
    assert [row["epoch"] for row in RunDir(whole).history() if row["phase"] == "glow"] == [1, 2, 3]
    evaluation = ["--no-fid", "--elbo-images", "8", "--is-images", "4", "--is-samples", "2"]
    finished(torchrun(2, "evaluate", "--run-dir", str(whole), "--quiet", *evaluation))
    metrics = json.loads((whole / "metrics.json").read_text())
    assert "partial" not in metrics
    assert 0 < metrics["test_elbo_bpd"] < 16


def test_a_sigterm_to_torchrun_stops_every_rank_after_the_same_step(tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    finished(torchrun(2, "train", "--run-dir", str(whole), *TRAIN, "--epochs", "glow=2"))
    process = torchrun(2, "train", "--run-dir", str(stopped), *TRAIN, "--epochs", "glow=2")
    while not (stopped / "vae.ckpt").exists() and process.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # in the glow phase
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, out
    assert "stopped by SIGTERM; kept" in out, out
    assert "Resume with: pyro-vaeflow train" in out
    saved = torch.load(stopped / "glow.ckpt", weights_only=True)
    assert len(saved["rng"]["ranks"]) == 2  # both ranks' streams, at the same step
    finished(
        torchrun(2, "train", "--run-dir", str(stopped), *TRAIN, "--epochs", "glow=2", "--resume")
    )
    for name, value in weights(whole).items():
        assert torch.equal(value, weights(stopped)[name]), name
