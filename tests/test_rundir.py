"""The run directory's files, atomic writes, and the argument checks shared by the package."""

from __future__ import annotations

import importlib.util
import json

import pytest

from pyro_vaeflow.checkpoint import CheckpointError
from pyro_vaeflow.files import atomic_write, write_json
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.validation import check_choice, check_image_shape, check_int, check_number


def test_paths_are_those_of_the_documented_layout(tmp_path):
    run = RunDir(tmp_path)
    assert [p.name for p in (run.config_path, run.model_path, run.log_path, run.metrics_path)] == [
        "config.json",
        "model.pt",
        "metrics.jsonl",
        "metrics.json",
    ]
    assert run.checkpoint_path("glow") == tmp_path / "glow.ckpt"
    assert run.figure_path("samples") == tmp_path / "figures" / "samples.png"


def test_the_log_keeps_the_last_of_a_repeated_epoch_and_skips_a_cut_line(tmp_path):
    run = RunDir(tmp_path)
    with run.metrics_log() as log:
        log.write({"phase": "vae", "epoch": 1, "train_bpd": 6.0, "seconds": 1.0})
        log.write({"kind": "step", "phase": "vae", "epoch": 2, "step": 10, "train_bpd": 5.5})
        log.write({"phase": "vae", "epoch": 1, "train_bpd": 5.9, "seconds": 1.0})  # resumed
        log.write({"kind": "step", "phase": "vae", "epoch": 2, "step": 10, "train_bpd": 5.4})
    with open(run.log_path, "a") as stream:
        stream.write('{"phase": "vae", "epo')  # a stop in the middle of a line
    assert run.history() == [{"phase": "vae", "epoch": 1, "train_bpd": 5.9, "seconds": 1.0}]
    assert [row["train_bpd"] for row in run.steps()] == [5.4]
    with run.metrics_log() as log:  # the resumed run's first row is not lost
        log.write({"phase": "vae", "epoch": 2, "train_bpd": 5.5, "seconds": 1.0})
    assert [row["epoch"] for row in run.history()] == [1, 2]
    if importlib.util.find_spec("tensorboard") is not None:  # an optional dependency
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_config_and_metrics_read_back_or_give_clear_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        run.read_config()
    run.write_config({"name": "cpu"})
    assert run.read_config() == {"name": "cpu"}
    run.config_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        run.read_config()
    assert run.read_metrics() is None
    run.write_metrics({"fid": 1.0})
    assert run.read_metrics() == {"fid": 1.0}
    for text, problem in (("[1, 2]", "holds a list"), ('{"fid": 1', "is not valid JSON")):
        run.metrics_path.write_text(text)
        with pytest.raises(ValueError, match=f"metrics.json {problem}"):
            run.read_metrics()
        assert run.metrics_path.read_text() == text  # left as it was


def test_checkpoints_name_their_phase(tmp_path):
    run = RunDir(tmp_path)
    assert not run.has_checkpoints()
    run.save_checkpoint("vae", {"epoch": 1})
    assert run.has_checkpoint("vae")
    assert not run.has_checkpoint("glow")
    assert run.load_checkpoint("vae")["epoch"] == 1
    run.checkpoint_path("glow").write_bytes(run.checkpoint_path("vae").read_bytes())
    with pytest.raises(ValueError, match="'vae' checkpoint, not 'glow'"):
        run.load_checkpoint("glow")
    whole = run.checkpoint_path("vae").read_bytes()
    run.checkpoint_path("vae").write_bytes(whole[: len(whole) // 2])  # cut short
    with pytest.raises(CheckpointError, match="corrupt"):
        run.load_checkpoint("vae")


def test_an_atomic_write_gets_the_permissions_of_a_plain_one(tmp_path):
    (tmp_path / "plain").write_text("x")
    written = write_json(tmp_path / "atomic.json", {})
    assert written.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "a.json", {"old": True})

    def fail(stream):
        stream.write(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize(
    ("check", "args", "message"),
    [
        (check_int, ("n", 1.0), "n must be an integer >= 1, got 1.0"),
        (check_int, ("n", False, 0), "n must be an integer >= 0, got False"),
        (check_int, ("bits", 9, 1, 8), r"bits must be an integer in 1\.\.8, got 9"),
        (check_number, ("lr", "0.1"), "lr must be a finite number, got '0.1'"),
        (check_number, ("lr", float("inf"), 0.0), r"lr must be a finite number >= 0\.0"),
        (check_number, ("scale", 0.0, 0.0, True), r"scale must be a finite number > 0\.0"),
        (check_choice, ("prior", "vamp", ("flow", "normal")), "prior must be one of"),
        (check_image_shape, ((28, 28),), r"image_shape must be \(C, H, W\)"),
        (check_image_shape, ((1, 0, 28),), r"image_shape must be \(C, H, W\)"),
        (check_image_shape, ("abc",), r"image_shape must be \(C, H, W\)"),
    ],
)
def test_the_argument_checks_name_the_argument(check, args, message):
    with pytest.raises(ValueError, match=message):
        check(*args)
    assert check_int("n", 3) == 3
    assert check_number("x", 2) == 2.0
