"""Run every script in ``examples/`` through its own ``main`` with its smoke flag.

Each example defines ``parse_args(argv)`` and ``main(args)`` and does no work at import time,
so a new example is tested by adding its file.
"""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"examples.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_found():
    assert EXAMPLES, "no scripts found in examples/"


# A smoke run scores FID on a handful of samples, whose covariance is singular: the Fréchet
# distance says so with a RuntimeWarning.
@pytest.mark.filterwarnings("ignore:the Fréchet distance:RuntimeWarning")
@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_smoke(path: Path, capsys: pytest.CaptureFixture[str]):
    example = load(path)
    assert not capsys.readouterr().out, f"{path.name} printed at import time"
    example.main(example.parse_args(["--smoke"]))
    assert capsys.readouterr().out, f"{path.name} printed nothing"
