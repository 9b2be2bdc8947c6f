"""Shared by the doctests of the package and by ``tests/``."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
