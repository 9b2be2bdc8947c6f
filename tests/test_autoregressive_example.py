"""The PixelCNN example trains, evaluates and draws both models in a seconds-long smoke run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "autoregressive.py"


def load():
    spec = importlib.util.spec_from_file_location("examples.autoregressive", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "options",
    [["--model", "vlae"], ["--model", "vlae", "--likelihood", "logistic"], ["--model", "agave"]],
    ids=["vlae-binary", "vlae-8bit", "agave"],
)
def test_smoke_run(options, tmp_path, capsys):
    example = load()
    metrics = example.main(example.parse_args([*options, "--smoke", "--run-dir", str(tmp_path)]))
    out = capsys.readouterr().out
    assert "importance-sampled, bits/dim" in out
    assert math.isfinite(metrics["test_is_bpd"])
    assert math.isfinite(metrics["test_elbo_bpd"])
    assert metrics["n_bits"] == (1 if options[-1] == "vlae" else 8)
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["is_samples"] == 8
    assert (tmp_path / "model.pt").is_file()
