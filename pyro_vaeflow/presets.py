r"""Named configurations: the CPU demo, a longer CPU run, and the paper's sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

__all__ = ["PRESETS", "Preset", "get_preset", "override"]


@dataclass(frozen=True)
class Preset:
    """Everything a run needs: data, model sizes, the two phases and the evaluation.

    Attributes:
        name: the preset's name.
        description: one line on what it is for.
        dataset: a name for :func:`~pyro_vaeflow.data.load_images`.
        image_shape: ``(C, H, W)``.
        model: keyword arguments of the model class.
        architecture: the model class, a key of :data:`~pyro_vaeflow.models.ARCHITECTURES`
            (``"vaeflow"``, the paper's model, by default).
        joint: train a ``VAEFlow`` in one ``"joint"`` phase of ``vae_epochs + glow_epochs``
            epochs instead of the paper's two phases (its ablation).
        binarize: train on dynamically binarised images (fresh Bernoulli draws every epoch,
            :class:`~pyro_vaeflow.data.DynamicallyBinarized`) and test on one fixed
            binarisation, as VLAE's binary setting does.
        vae_epochs: epochs of phase 1 (VAE and prior; the only phase of a single-phase model
            such as the standalone Glow).
        glow_epochs: epochs of phase 2 (the Glow layer, or a two-stage VAE's second stage).
        batch_size: images per step.
        lr: Adam's learning rate.
        lr_halve_every: halve the learning rate every this many epochs.
        warmup_steps: linear learning-rate warm-up at the start of each phase (see
            :func:`~pyro_vaeflow.training.fit`).
        clip_norm: per-parameter gradient-norm clipping.
        time_budget: wall-clock seconds for both phases together (``None``: no limit); each
            phase gets its share by epochs, and stops before an epoch that would overrun it.
        train_images: use the first this many training images (``None``: all).
        elbo_images: test images for the test ELBO (``None``: all).
        is_images: test images for the importance-sampled log-likelihood.
        is_samples: importance samples :math:`K` per image.
        fid_samples: generated and test images for FID.
        temperature: the Glow temperature of the samples scored by FID.
    """

    name: str
    description: str
    dataset: str
    image_shape: tuple[int, int, int]
    model: dict = field(default_factory=dict)
    architecture: str = "vaeflow"
    joint: bool = False
    binarize: bool = False
    vae_epochs: int = 10
    glow_epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_halve_every: int | None = None
    warmup_steps: int = 200
    clip_norm: float | None = 100.0
    time_budget: float | None = None
    train_images: int | None = None
    elbo_images: int | None = None
    is_images: int = 100
    is_samples: int = 1000
    fid_samples: int = 1000
    temperature: float = 0.5

    def to_dict(self) -> dict:
        """The preset as plain data (for ``config.json``)."""
        return asdict(self)


_CPU_MODEL = {
    "latent_dim": 32,
    "base_channels": 16,
    "fc_dim": 256,
    "prior_layers": 8,
    "prior_hidden_dims": (256, 256),
    "glow_depth": 8,
    "glow_hidden_channels": 64,
    "glow_squeeze": 1,
}


def _paper_model(depth: int) -> dict:
    return {
        "latent_dim": 64,
        "depth": depth,
        "base_channels": 64,
        "fc_dim": 512,
        "prior_layers": 16,
        "prior_hidden_dims": (1024, 1024),
        "glow_depth": 32,
        "glow_hidden_channels": 512,
        "glow_coupling": "additive",
        # One 2×2 squeeze before the steps (12×16×16 for CIFAR-10, 12×32×32 for CelebA 64×64),
        # as openai/glow does even with one level. The paper says "no squeeze", but width 512 on
        # 3×32×32 would need 148% of a GTX 1080 Ti's fp32 peak for its 162 s CIFAR-10 epoch
        # (benchmarks/flops_glow_layer.py; docs/benchmarks.md, Table 2).
        "glow_squeeze": 1,
    }


_PAPER_TRAINING = {
    "vae_epochs": 1000,
    "glow_epochs": 1000,
    "batch_size": 64,
    "lr": 1e-4,
    "lr_halve_every": 250,
    "is_images": 1000,
    "fid_samples": 10000,
}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "cpu",
            "the demo: both phases and the evaluation in about 20 minutes on 2 CPU cores",
            "fashion-mnist",
            (1, 28, 28),
            _CPU_MODEL,
            vae_epochs=6,
            glow_epochs=4,
            time_budget=14 * 60,
        ),
        Preset(
            "cpu-long",
            "a longer CPU run, at most 2 hours of training on 2 cores; resumable",
            "fashion-mnist",
            (1, 28, 28),
            {
                **_CPU_MODEL,
                "base_channels": 32,
                "fc_dim": 512,
                "glow_depth": 16,
                "glow_hidden_channels": 128,
            },
            vae_epochs=40,
            glow_epochs=30,
            time_budget=100 * 60,
            fid_samples=2000,
        ),
        Preset(
            "two-stage-cpu",
            "the two-stage VAE baseline (Dai & Wipf) with the cpu preset's first stage",
            "fashion-mnist",
            (1, 28, 28),
            {key: _CPU_MODEL[key] for key in ("latent_dim", "base_channels", "fc_dim")},
            architecture="two-stage",
            vae_epochs=6,
            glow_epochs=4,
            time_budget=14 * 60,
        ),
        Preset(
            "glow-cpu",
            "the standalone multi-scale Glow baseline: 2 levels of 8 steps, width 64, affine",
            "fashion-mnist",
            (1, 28, 28),
            {"levels": 2, "depth": 8, "hidden_channels": 64, "coupling": "affine"},
            architecture="glow",
            vae_epochs=10,
            glow_epochs=0,
            time_budget=14 * 60,
            is_samples=1,
            temperature=0.7,
        ),
        Preset(
            "vlae-cpu",
            "VLAE: a MADE-flow prior and a local-window PixelCNN decoder, 8-bit logistic pixels",
            "fashion-mnist",
            (1, 28, 28),
            {"likelihood": "logistic", "window": 3},
            architecture="vlae",
            vae_epochs=10,
            glow_epochs=0,
            time_budget=14 * 60,
            is_samples=100,
        ),
        Preset(
            "vlae-binary-cpu",
            "VLAE on dynamically binarised Fashion-MNIST (Bernoulli pixels), the paper's setting",
            "fashion-mnist",
            (1, 28, 28),
            {"likelihood": "bernoulli", "window": 3},
            architecture="vlae",
            binarize=True,
            vae_epochs=10,
            glow_epochs=0,
            time_budget=14 * 60,
            is_samples=100,
        ),
        Preset(
            "agave-cpu",
            "AGAVE: an auxiliary factorised decoder guiding a conditional PixelCNN, 8-bit pixels",
            "fashion-mnist",
            (1, 28, 28),
            {},
            architecture="agave",
            vae_epochs=10,
            glow_epochs=0,
            time_budget=14 * 60,
            is_samples=100,
        ),
        Preset(
            "paper-cifar10",
            "the paper's CIFAR-10 model: ResNet depth 3, prior 16x(1024, 1024), Glow 32x512",
            "cifar10",
            (3, 32, 32),
            _paper_model(3),
            **_PAPER_TRAINING,
        ),
        Preset(
            "paper-celeba",
            "the paper's CelebA 64x64 model: ResNet depth 4, prior 16x(1024, 1024), Glow 32x512",
            "celeba",
            (3, 64, 64),
            _paper_model(4),
            **_PAPER_TRAINING,
        ),
    )
}


def get_preset(name: str, **overrides) -> Preset:
    """The preset ``name``, with some fields replaced (``None`` values are ignored).

    Example:
        >>> get_preset("cpu", vae_epochs=1).vae_epochs
        1
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return override(PRESETS[name], **overrides)


def override(preset: Preset, **overrides) -> Preset:
    """``preset`` with the given fields replaced; ``None`` values leave a field as it is.

    Example:
        >>> override(PRESETS["cpu"], fid_samples=None, is_images=10).is_images
        10
    """
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
