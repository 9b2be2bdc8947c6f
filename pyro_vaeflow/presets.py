r"""Named configurations: the CPU demo, a longer CPU run, the baselines and the paper's sizes."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

__all__ = ["PRESETS", "Preset", "get_preset", "override"]


@dataclass(frozen=True)
class Preset:
    """Everything a run needs: data, model sizes, the training phases and the evaluation.

    Attributes:
        name: the preset's name.
        description: one line on what it is for.
        dataset: a name for :func:`~pyro_vaeflow.data.load_images`.
        image_shape: ``(C, H, W)``.
        model: keyword arguments of the model class.
        architecture: the model class, a key of :data:`~pyro_vaeflow.models.ARCHITECTURES`
            (``"vaeflow"``, the paper's model, by default).
        binarize: train on dynamically binarised images (fresh Bernoulli draws every epoch,
            :class:`~pyro_vaeflow.data.DynamicallyBinarized`) and test on one fixed
            binarisation, as VLAE's binary setting does.
        epochs: the phases to train, in order, with their epochs: names of the model's phases
            (see :attr:`~pyro_vaeflow.models.ImageModel.phases`), e.g. ``{"vae": 6, "glow": 4}``
            for the paper's two phases, ``{"joint": 10}`` for its ablation, ``{"all": 10}`` for
            a single-phase model. A phase with 0 epochs, or one the model cannot train (a Glow
            phase without a Glow layer), is skipped.
        batch_size: images per step.
        lr: Adam's learning rate.
        lr_halve_every: halve the learning rate every this many epochs.
        warmup_steps: linear learning-rate warm-up at the start of each phase (see
            :func:`~pyro_vaeflow.training.fit`).
        clip_norm: per-parameter gradient-norm clipping.
        time_budget: wall-clock seconds for all the phases together (``None``: no limit); each
            phase gets its share by epochs, and stops before an epoch that would overrun it.
        train_images: use the first this many training images (``None``: all).
        val_images: hold out the last this many of them as a validation set, scored after
            every epoch of every phase (and used by a phase's early stopping); ``None``: no
            validation set (a phase with early stopping then splits its own).
        elbo_images: test images for the test ELBO (``None``: all).
        is_images: test images for the importance-sampled log-likelihood.
        is_samples: importance samples :math:`K` per image.
        fid_samples: generated and test images for FID.
        temperature: the Glow temperature of the samples scored by FID.

    ``vae_epochs`` and ``glow_epochs`` (the first and second phase's epochs) are kept as
    read-only aliases, and :func:`override`/:func:`get_preset` accept them.

    Every field is checked when a preset is made (also by :func:`override` and
    :meth:`from_dict`): a wrong type or value is a ``ValueError`` that names the field, what it
    must be and what it got. Integers must be ``int`` (not ``bool``, not ``64.0``), numbers
    finite (but ``time_budget``, which may be ``inf``), and a list stands for a tuple in
    ``image_shape``.

    Example:
        >>> replace(PRESETS["cpu"], batch_size="64")
        Traceback (most recent call last):
        ...
        ValueError: field 'batch_size' must be an integer >= 1, got '64'
    """

    name: str
    description: str
    dataset: str
    image_shape: tuple[int, int, int]
    model: dict = field(default_factory=dict)
    architecture: str = "vaeflow"
    binarize: bool = False
    epochs: dict[str, int] = field(default_factory=lambda: {"vae": 10, "glow": 10})
    batch_size: int = 128
    lr: float = 1e-3
    lr_halve_every: int | None = None
    warmup_steps: int = 200
    clip_norm: float | None = 100.0
    time_budget: float | None = None
    train_images: int | None = None
    val_images: int | None = None
    elbo_images: int | None = None
    is_images: int = 100
    is_samples: int = 1000
    fid_samples: int = 1000
    temperature: float = 0.5

    def __post_init__(self) -> None:
        for name, (expected, valid) in _FIELDS.items():
            _check_field(name, getattr(self, name), expected, valid)
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "epochs", dict(self.epochs))  # a copy of the caller's dict

    @property
    def vae_epochs(self) -> int:
        """The first phase's epochs (an alias kept from when presets had two fixed phases)."""
        return next(iter(self.epochs.values()))

    @property
    def glow_epochs(self) -> int:
        """The second phase's epochs, 0 if there is none (an alias, as :attr:`vae_epochs`)."""
        return list(self.epochs.values())[1] if len(self.epochs) > 1 else 0

    def to_dict(self) -> dict:
        """The preset as plain data (for ``config.json``).

        Example:
            >>> Preset.from_dict(PRESETS["cpu"].to_dict()) == PRESETS["cpu"]
            True
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, source: str | os.PathLike | None = None) -> Preset:
        """The preset of :meth:`to_dict`'s data, read back from JSON (lists become tuples).

        Every field is checked (see :class:`Preset`). ``source``, the file the data were read
        from (a ``config.json``), starts every error message, so that it names the file.

        Older and newer versions: a ``config.json`` written before presets had ``epochs``
        (with ``vae_epochs``, ``glow_epochs`` and ``joint``) is read into the phases of its
        architecture, and a field added since it was written (``architecture``, ``binarize``,
        ``warmup_steps``, ``val_images``) takes its default. A key this version does not know
        is refused: it was written by a newer version (or by hand), and reading on without it
        would evaluate or resume a run with other settings than it was trained with.

        Args:
            data: the fields, as :meth:`to_dict` gives them or ``json.load`` reads them.
            source: the file they come from, for the error messages (``None``: no file).

        Raises:
            ValueError: for data that are not a mapping, a missing, unknown or malformed field.

        Example:
            >>> old = {**PRESETS["cpu"].to_dict(), "vae_epochs": 3, "glow_epochs": 2}
            >>> del old["epochs"]
            >>> Preset.from_dict(old).epochs
            {'vae': 3, 'glow': 2}
            >>> Preset.from_dict({**old, "batch_size": "64"}, source="runs/x/config.json")
            Traceback (most recent call last):
            ...
            ValueError: runs/x/config.json: field 'batch_size' must be an integer >= 1, got '64'
        """
        try:
            return cls(**_read_fields(data))
        except ValueError as error:
            if source is None:
                raise
            raise ValueError(f"{source}: {error}") from None


_Check = tuple[str, Callable[[object], bool]]


def _is_int(value: object, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: object, strict: bool = False) -> bool:
    """Whether ``value`` is a finite real number ``>= 0`` (``> 0`` if ``strict``)."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    return real and math.isfinite(value) and (value > 0 if strict else value >= 0)


def _optional(check: _Check) -> _Check:
    """``check`` that also lets ``None`` pass."""
    expected, valid = check
    return f"{expected} or None", lambda value: value is None or valid(value)


def _integer(low: int) -> _Check:
    return f"an integer >= {low}", lambda value: _is_int(value, low)


_STRING: _Check = ("a string", lambda value: isinstance(value, str))
_BOOL: _Check = ("true or false", lambda value: isinstance(value, bool))

#: Each field of :class:`Preset`: what it must be, and the test.
_FIELDS: dict[str, _Check] = {
    "name": _STRING,
    "description": _STRING,
    "dataset": _STRING,
    "image_shape": (
        "(C, H, W), three integers >= 1",
        lambda value: (
            isinstance(value, (list, tuple))
            and len(value) == 3
            and all(_is_int(size, 1) for size in value)
        ),
    ),
    "model": (
        "a dict of the model's keyword arguments",
        lambda value: isinstance(value, dict) and all(isinstance(key, str) for key in value),
    ),
    "architecture": _STRING,
    "binarize": _BOOL,
    "epochs": (
        "a non-empty dict of phase names to epochs (integers >= 0)",
        lambda value: (
            isinstance(value, dict)
            and bool(value)
            and all(isinstance(phase, str) and _is_int(n) for phase, n in value.items())
        ),
    ),
    "batch_size": _integer(1),
    "lr": ("a finite number > 0", lambda value: _is_number(value, strict=True)),
    "lr_halve_every": _optional(_integer(0)),
    "warmup_steps": _integer(0),
    "clip_norm": _optional(("a finite number >= 0", _is_number)),
    "time_budget": _optional(
        (
            "a number of seconds >= 0 (inf: no limit)",
            lambda value: value == math.inf or _is_number(value),
        )
    ),
    "train_images": _optional(_integer(1)),
    "val_images": _optional(_integer(0)),
    "elbo_images": _optional(_integer(0)),
    "is_images": _integer(0),
    "is_samples": _integer(1),
    "fid_samples": _integer(0),
    "temperature": ("a finite number >= 0", _is_number),
}
#: The fields of a ``config.json`` written before presets had ``epochs``.
_LEGACY_FIELDS: dict[str, _Check] = {
    "vae_epochs": _integer(0),
    "glow_epochs": _integer(0),
    "joint": _BOOL,
}


def _check_field(name: str, value: object, expected: str, valid: Callable[[object], bool]) -> None:
    if not valid(value):
        raise ValueError(f"field {name!r} must be {expected}, got {value!r}")


def _read_fields(data: Mapping) -> dict:
    """The keyword arguments of :class:`Preset` for the data of a ``config.json``: the fields of
    older versions translated, JSON's lists made tuples in ``model``; an unknown key, a missing
    field or a malformed old field is a ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object of preset fields, got {type(data).__name__}")
    data = dict(data)
    fields = dataclasses.fields(Preset)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known - set(_LEGACY_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown preset fields {unknown} (written by a newer version of pyro-vaeflow?); "
            f"the fields are {sorted(known)}"
        )
    legacy = {key: data.pop(key) for key in _LEGACY_FIELDS if key in data}
    for key, value in legacy.items():
        _check_field(key, value, *_LEGACY_FIELDS[key])
    if "epochs" not in data:
        architecture = data.get("architecture", "vaeflow")
        _check_field("architecture", architecture, *_STRING)
        data["epochs"] = _legacy_epochs(architecture, **legacy)
    missing = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in data
    ]
    if missing:
        raise ValueError(f"missing preset fields {missing}")
    if isinstance(data.get("model"), dict):  # JSON has no tuples
        data["model"] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in data["model"].items()
        }
    return data


def _legacy_epochs(
    architecture: str, vae_epochs: int = 10, glow_epochs: int = 10, joint: bool = False
) -> dict[str, int]:
    """The ``epochs`` of a preset written with the old fields: the first two phases of the
    architecture's default schedule (one ``"joint"`` phase of both when ``joint``, for an
    architecture that has one; others ignored ``joint``)."""
    model_class = _model_class(architecture)
    if joint and "joint" in model_class.phases:
        return {"joint": vae_epochs + glow_epochs}
    return dict(zip(model_class.default_schedule, (vae_epochs, glow_epochs), strict=False))


def _model_class(architecture: str):
    """The model class of ``architecture``, whose ``phases`` and ``default_schedule`` say how
    it trains."""
    from pyro_vaeflow.models import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}")
    return ARCHITECTURES[architecture]


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
    "epochs": {"vae": 1000, "glow": 1000},
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
            epochs={"vae": 6, "glow": 4},
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
            epochs={"vae": 40, "glow": 30},
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
            epochs={"first": 6, "second": 4},
            time_budget=14 * 60,
        ),
        Preset(
            "glow-cpu",
            "the standalone multi-scale Glow baseline: 2 levels of 8 steps, width 64, affine",
            "fashion-mnist",
            (1, 28, 28),
            {"levels": 2, "depth": 8, "hidden_channels": 64, "coupling": "affine"},
            architecture="glow",
            epochs={"all": 10},
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
            epochs={"all": 10},
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
            epochs={"all": 10},
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
            epochs={"all": 10},
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
    """The preset ``name``, with some fields replaced (see :func:`override`).

    Example:
        >>> get_preset("cpu", vae_epochs=1).epochs
        {'vae': 1, 'glow': 4}
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return override(PRESETS[name], **overrides)


def override(preset: Preset, **overrides) -> Preset:
    """``preset`` with the given fields replaced; ``None`` values leave a field as it is.

    The aliases of earlier versions are accepted: ``vae_epochs`` and ``glow_epochs`` set the
    epochs of the preset's first and second phase, and ``joint=True`` trains those epochs in
    one ``"joint"`` phase.

    Example:
        >>> override(PRESETS["cpu"], fid_samples=None, is_images=10).is_images
        10
        >>> override(PRESETS["cpu"], glow_epochs=0, joint=True).epochs
        {'joint': 6}
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    epochs = dict(overrides.pop("epochs", preset.epochs))
    phases = list(epochs)
    for position, alias in enumerate(("vae_epochs", "glow_epochs")):
        if alias not in overrides:
            continue
        value = overrides.pop(alias)
        if position < len(phases):
            epochs[phases[position]] = value
        elif value:  # as before the aliases, a second phase's epochs are ignored without one
            warnings.warn(
                f"{alias}={value} is ignored: it sets the epochs of a preset's phase "
                f"{position + 1}, and {preset.name!r} has the phases {phases} only",
                stacklevel=2,
            )
    if overrides.pop("joint", False):
        architecture = overrides.get("architecture", preset.architecture)
        if "joint" in _model_class(architecture).phases:
            epochs = {"joint": sum(epochs.values())}
        else:
            warnings.warn(
                f"joint=True is ignored: a {architecture!r} model has no joint phase",
                stacklevel=2,
            )
    return replace(preset, epochs=epochs, **overrides)
