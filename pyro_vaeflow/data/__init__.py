r"""Image datasets as ``uint8`` pixels, and their dequantisation; nothing is ever downloaded.

Fashion-MNIST is embedded (the Debian package ``dataset-fashion-mnist``); MNIST, CIFAR-10,
CelebA and image folders are read from torchvision's on-disk layouts in a folder you have.
"""

from pyro_vaeflow.data.binarize import DynamicallyBinarized, binarize
from pyro_vaeflow.data.dataset import ImageDataset
from pyro_vaeflow.data.dequantization import dequantize, quantize
from pyro_vaeflow.data.idx import read_idx
from pyro_vaeflow.data.load import DATASETS, load_images, load_labels
from pyro_vaeflow.data.mnist import FASHION_MNIST_APT, FASHION_MNIST_DIR
from pyro_vaeflow.data.split import train_val_split

__all__ = [
    "DATASETS",
    "FASHION_MNIST_APT",
    "FASHION_MNIST_DIR",
    "DynamicallyBinarized",
    "ImageDataset",
    "binarize",
    "dequantize",
    "load_images",
    "load_labels",
    "quantize",
    "read_idx",
    "train_val_split",
]
