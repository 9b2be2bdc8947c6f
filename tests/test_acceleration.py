"""Compiled networks and bf16 mixed precision against the eager float32 (and float64) truth.

* Compiled: for every architecture of the model contract suite (``model_registry.CASES``), the
  loss of one ELBO step and every gradient equal the eager model's to 1e-5 (float32, the same
  random draws). By default compiled with ``aot_eager`` (Dynamo's graphs and AOT autograd,
  the eager kernels: seconds) and one architecture with Inductor; every architecture with
  Inductor in the slow suite.
* bf16: for every flow of the transform suite (``registry.CASES``), the log-determinant stays
  float32 and matches float64 brute force (the log-determinant of the autograd Jacobian) to
  :data:`BF16_LOG_DET_TOLERANCE` per dimension; a short training run tracks its float32 twin.
"""

from __future__ import annotations

import copy
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.autograd.functional import jacobian

from pyro_vaeflow.acceleration import (
    Acceleration,
    accelerate,
    compile_unavailable,
    load_compile_cache,
    networks,
    save_compile_cache,
    set_tf32,
)
from pyro_vaeflow.cli import main
from pyro_vaeflow.infer import elbo
from pyro_vaeflow.models import load_model
from pyro_vaeflow.nets import MixedPrecision
from pyro_vaeflow.presets import PRESETS, override
from pyro_vaeflow.run import train
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import fit
from tests.helpers import fashion_images, tiny_vae
from tests.model_registry import CASES as MODEL_CASES
from tests.registry import CASES as FLOW_CASES

# Dynamo reads ``.grad`` of the non-leaf inputs it wraps (Pyro's reparameterised samples), and
# torch warns about its own read; the suite turns warnings into errors.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning"
)

#: The documented bf16 tolerance: |log-det(bf16) − log-det(float64)| per dimension of the event,
#: bf16's machine epsilon 2^-7 (each log-scale comes from a network output rounded to 8 bits;
#: measured: at most 3.8e-3 a dimension over these flows, 0 for the additive ones).
BF16_LOG_DET_TOLERANCE = torch.finfo(torch.bfloat16).eps


def loss_and_gradients(model, x: torch.Tensor, seed: int = 1):
    model.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    with pyro.get_param_store().scope():
        loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_compiled_equals_eager(case, backend: str) -> None:
    torch.manual_seed(0)
    eager = case.build()
    compiled = accelerate(copy.deepcopy(eager), compile=True, backend=backend)
    assert list(networks(compiled)), "nothing to compile"
    assert all(n._compiled_call_impl is not None for _, n in networks(compiled))
    x = case.images(4)
    loss, grads = loss_and_gradients(eager, x)
    compiled_loss, compiled_grads = loss_and_gradients(compiled, x)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-5)
    assert compiled_grads.keys() == grads.keys()
    for name, grad in grads.items():
        scale = grad.abs().max().item()
        torch.testing.assert_close(
            compiled_grads[name], grad, rtol=1e-5, atol=1e-5 * max(scale, 1.0), msg=name
        )


@pytest.mark.parametrize("case", MODEL_CASES, ids=[case.id for case in MODEL_CASES])
def test_compiled_step_equals_eager(case):
    assert_compiled_equals_eager(case, "aot_eager")


@pytest.mark.parametrize("case", MODEL_CASES[:1], ids=[MODEL_CASES[0].id])
def test_inductor_step_equals_eager(case):
    if (reason := compile_unavailable("cpu")) is not None:
        pytest.skip(f"torch.compile is not available here: {reason}")
    assert_compiled_equals_eager(case, "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("case", MODEL_CASES[1:], ids=[case.id for case in MODEL_CASES[1:]])
def test_inductor_step_equals_eager_every_architecture(case):
    if (reason := compile_unavailable("cpu")) is not None:
        pytest.skip(f"torch.compile is not available here: {reason}")
    assert_compiled_equals_eager(case, "inductor")


def test_compile_falls_back_to_eager_with_a_warning():
    vae = tiny_vae()
    with pytest.warns(RuntimeWarning, match="torch.compile is not available here .*eagerly"):
        accelerate(vae, compile=True, backend="no-such-backend")
    assert all(n._compiled_call_impl is None for _, n in networks(vae))
    assert torch.isfinite(elbo(vae.model, vae.guide, fashion_images(2))).all()


def test_a_compiled_model_saves_and_loads_with_the_same_keys(tmp_path):
    vae = tiny_vae()
    keys = list(vae.state_dict())
    accelerate(vae, compile=True, backend="aot_eager")
    assert list(vae.state_dict()) == keys
    loaded = load_model(vae.save(tmp_path / "model.pt"))
    x = fashion_images(3)
    vae.eval(), loaded.eval()
    pyro.set_rng_seed(1)
    expected = elbo(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    torch.testing.assert_close(elbo(loaded.model, loaded.guide, x), expected, rtol=1e-5, atol=1e-4)


def test_networks_are_the_outermost_ones():
    vae = tiny_vae()
    names = [name for name, _ in networks(vae)]
    assert "encoder" in names
    assert "decoder" in names
    assert any(name.startswith("glow.") and name.endswith(".net") for name in names)
    assert any(name.startswith("prior_flow.") for name in names)
    assert not any(a != b and b.startswith(a + ".") for a in names for b in names)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        accelerate(tiny_vae(), precision="fp8")


def bf16_flow(case):
    _, factory, event_shape = case
    torch.manual_seed(0)
    flow = factory()
    return flow, accelerate(copy.deepcopy(flow), precision="bf16"), torch.Size(event_shape)


@pytest.mark.parametrize("case", FLOW_CASES, ids=[case[0] for case in FLOW_CASES])
def test_bf16_log_det_matches_float64_brute_force(case):
    flow, flow_bf16, event_shape = bf16_flow(case)
    u = torch.randn(3, *event_shape)
    x = flow_bf16(u)
    log_det = flow_bf16.log_abs_det_jacobian(u, x)
    assert x.dtype == log_det.dtype == torch.float32
    has_bf16 = any(isinstance(m, MixedPrecision) for m in flow_bf16.modules())
    if has_bf16:  # the bf16 layers did run: the map moved by bf16 rounding
        assert not torch.equal(x, flow(u))
    exact = copy.deepcopy(flow).double()
    dim = event_shape.numel()
    for i in range(len(u)):
        v = u[i].double().reshape(-1)
        matrix = jacobian(lambda w: exact(w.reshape(event_shape)).reshape(-1), v)
        truth = torch.linalg.slogdet(matrix).logabsdet.item()
        tolerance = BF16_LOG_DET_TOLERANCE * dim if has_bf16 else 1e-4 * (1 + abs(truth))
        assert abs(log_det[i].item() - truth) <= tolerance, (log_det[i].item(), truth)


def test_bf16_runs_only_float32_inputs_in_bf16():
    vae = accelerate(tiny_vae(), precision="bf16")
    loc, scale = vae.encoder(fashion_images(2))
    assert loc.dtype == scale.dtype == torch.float32
    vae64 = copy.deepcopy(vae).double()
    loc64, _ = vae64.encoder(fashion_images(2).double())
    assert loc64.dtype == torch.float64
    accelerate(vae, precision="fp32")
    assert all(m.compute_dtype is None for m in vae.modules() if isinstance(m, MixedPrecision))


def test_a_bf16_training_run_tracks_its_float32_twin():
    x = fashion_images(64)
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        vae = accelerate(tiny_vae(), precision=precision)
        runs[precision] = fit(vae, x, "joint", epochs=3, batch_size=16, lr=1e-3, progress=False)
    for fp32, bf16 in zip(runs["fp32"], runs["bf16"], strict=True):
        loss = fp32["train_bpd"]
        assert math.isfinite(bf16["train_bpd"])
        assert abs(bf16["train_bpd"] - loss) <= 0.02 * abs(loss), (fp32, bf16)


def test_set_tf32_switches_cuda_matmuls_and_convolutions():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_compile_cache_round_trip_and_a_corrupt_file(tmp_path):
    if not hasattr(torch.compiler, "save_cache_artifacts"):
        pytest.skip("this torch has no portable compile cache")
    if (reason := compile_unavailable("cpu")) is not None:
        pytest.skip(f"torch.compile is not available here: {reason}")
    path = tmp_path / "compile-cache.bin"
    assert save_compile_cache(path)
    assert path.stat().st_size > 0
    assert load_compile_cache(path)
    assert not load_compile_cache(tmp_path / "missing.bin")
    path.write_bytes(b"not a cache")
    with pytest.warns(UserWarning, match="compile cache not loaded"):
        assert not load_compile_cache(path)


TINY_RUN = ["--train-images", "48", "--vae-epochs", "1", "--glow-epochs", "1", "--quiet"]


def test_cli_trains_in_bf16(tmp_path):
    assert main(["train", "--run-dir", str(tmp_path), *TINY_RUN, "--precision", "bf16"]) == 0
    assert (tmp_path / "model.pt").is_file()
    assert not (tmp_path / "compile-cache.bin").exists()


def test_train_returns_a_float32_model_and_sets_tf32_back(tmp_path):
    preset = override(PRESETS["cpu"], train_images=32, batch_size=16, vae_epochs=1, glow_epochs=0)
    acceleration = Acceleration(precision="bf16", tf32=False)
    vae, history = train(preset, tmp_path, progress=False, acceleration=acceleration)
    assert len(history) == 1
    assert all(m.compute_dtype is None for m in vae.modules() if isinstance(m, MixedPrecision))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with acceleration.tf32_on("cpu"):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with acceleration.tf32_on("cuda"):  # the flags are set even without a GPU
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.slow
def test_cli_compiles_keeps_the_kernels_and_resumes_with_them(tmp_path):
    if (reason := compile_unavailable("cpu")) is not None:
        pytest.skip(f"torch.compile is not available here: {reason}")
    args = ["train", "--run-dir", str(tmp_path), *TINY_RUN, "--compile"]
    assert main(args) == 0
    cache = tmp_path / "compile-cache.bin"
    assert cache.stat().st_size > 0
    assert main([*args, "--resume", "--glow-epochs", "2"]) == 0
    history = RunDir(tmp_path).history()
    assert [(row["phase"], row["epoch"]) for row in history] == [
        ("vae", 1),
        ("glow", 1),
        ("glow", 2),
    ]
