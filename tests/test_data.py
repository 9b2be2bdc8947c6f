"""Data: real Fashion-MNIST, IDX parsing, folder layouts, dequantisation, the split, bad input.

Every image here is real Fashion-MNIST, from the Debian package ``dataset-fashion-mnist``.
Without it these tests fail with the loader's own error, which names the package.
"""

from __future__ import annotations

import gzip
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset, TensorDataset

import pyro_vaeflow.data.mnist
from pyro_vaeflow.data import (
    FASHION_MNIST_APT,
    ImageDataset,
    dequantize,
    load_images,
    load_labels,
    quantize,
    read_idx,
    train_val_split,
)
from pyro_vaeflow.data.mnist import find_idx

_IDX_TYPE = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Writes ``array`` as an IDX file (big-endian), gzipped if ``gz``."""
    header = bytes([0, 0, _IDX_TYPE[array.dtype], array.ndim])
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    return load_images("fashion-mnist", "test")


@pytest.fixture(scope="module")
def test_labels() -> torch.Tensor:
    return load_labels("fashion-mnist", "test")


def write_subset(folder: Path, images: torch.Tensor, labels: torch.Tensor, gz: bool) -> None:
    """Writes real images and labels as the four (Fashion-)MNIST IDX files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, part in (("train", slice(0, 60)), ("t10k", slice(60, 100))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[part, 0].numpy(), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels[part].byte().numpy(), gz)


# --- Real Fashion-MNIST -----------------------------------------------------------------------


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_fashion_mnist_is_embedded(split, n):
    images, labels = load_images("fashion-mnist", split), load_labels("fashion-mnist", split)
    assert images.shape == (n, 1, 28, 28)
    assert images.dtype == torch.uint8
    assert images.is_contiguous()
    assert images.min() == 0
    assert images.max() == 255
    assert labels.shape == (n,)
    assert labels.dtype == torch.long
    assert torch.equal(labels.bincount(), torch.full((10,), n // 10))  # balanced classes


def test_fashion_mnist_first_images(test_images, test_labels):
    # The first test image is an ankle boot (9), the second a pullover (2).
    assert test_labels[:4].tolist() == [9, 2, 1, 1]
    assert test_images[0].float().mean() > 0  # not blank


def test_names_are_normalised(test_images):
    assert torch.equal(load_images("Fashion_MNIST", "test")[:5], test_images[:5])


# --- IDX files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_read_idx_gz_and_plain(tmp_path, test_images, compressed):
    source = find_idx("fashion-mnist", "test", "images")
    if compressed:
        path = shutil.copy(source, tmp_path / "images.idx")  # told apart by content, not name
    else:
        path = tmp_path / "t10k-images-idx3-ubyte"
        with gzip.open(source) as file:
            path.write_bytes(file.read())
    assert torch.equal(read_idx(path), test_images[:, 0])


def test_read_idx_types_and_byte_order(tmp_path):
    values = np.array([[1, 256], [-5, 2**30]], dtype=np.int32)
    read = read_idx(write_idx(tmp_path / "ints", values))
    assert read.dtype == torch.int32
    assert read.tolist() == values.tolist()
    floats = np.array([0.5, -2.25], dtype=np.float32)
    assert read_idx(write_idx(tmp_path / "floats", floats, gz=True)).tolist() == [0.5, -2.25]


def _corrupt(data: bytes, how: str) -> bytes:
    return {
        "bad-magic": b"\x08\x03\x00\x00" + data[4:],
        "bad-type": data[:2] + b"\x42" + data[3:],
        "no-dims": data[:3] + b"\x00" + data[4:],
        "short-header": data[:10],
        "truncated": data[:-7],
        "trailing": data + b"\x00\x00",
        "empty": b"",
    }[how]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("bad-magic", "bad magic number 0x08030000"),
        ("bad-type", "bad magic number 0x00004203"),
        ("no-dims", "bad magic number 0x00000800"),
        ("short-header", "truncated IDX header"),
        ("truncated", r"IDX file truncated: shape \(100, 28, 28\) of uint8 needs 78400 bytes"),
        ("trailing", "IDX file has trailing bytes"),
        ("empty", "shorter than the header"),
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_corrupt_idx_is_named(tmp_path, test_images, how, message, gz):
    path = write_idx(tmp_path / "good", test_images[:100, 0].numpy())
    data = _corrupt(path.read_bytes(), how)
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_named(tmp_path):
    source = find_idx("fashion-mnist", "test", "labels")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(source.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt or truncated gzip file"):
        read_idx(path)


@pytest.mark.parametrize(
    ("kind", "array", "message"),
    [
        ("images", np.zeros((3, 28, 28), np.int32), r"expected uint8 images \[N, H, W\], found "),
        ("images", np.zeros(3, np.uint8), r"found torch.uint8 data of shape \(3,\)"),
        ("labels", np.zeros((3, 2), np.uint8), r"expected uint8 labels \[N\]"),
    ],
)
def test_wrong_dtype_or_shape_is_named(tmp_path, kind, array, message):
    stem = "t10k-images-idx3-ubyte" if kind == "images" else "t10k-labels-idx1-ubyte"
    write_idx(tmp_path / stem, array)
    load = load_images if kind == "images" else load_labels
    with pytest.raises(ValueError, match=message):
        load("fashion-mnist", "test", data_dir=tmp_path)


# --- Folders: IDX files, torchvision's layouts, image folders, CelebA --------------------------


@pytest.mark.parametrize(
    ("name", "subfolder", "gz"),
    [
        ("fashion-mnist", ".", True),
        ("fashion-mnist", ".", False),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("fashion-mnist", "raw", False),
        ("mnist", "MNIST/raw", False),
    ],
)
def test_data_dir_layouts(tmp_path, test_images, test_labels, name, subfolder, gz):
    write_subset(tmp_path / subfolder, test_images[:100], test_labels[:100], gz)
    assert torch.equal(load_images(name, "train", data_dir=tmp_path), test_images[:60])
    assert torch.equal(load_images(name, "test", data_dir=str(tmp_path)), test_images[60:100])
    assert torch.equal(load_labels(name, "test", data_dir=tmp_path), test_labels[60:100])


def test_missing_debian_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(pyro_vaeflow.data.mnist, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_images()
    assert FASHION_MNIST_APT in str(info.value)
    assert str(tmp_path / "absent" / "train-images-idx3-ubyte.gz") in str(info.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fashion-mnist", "no train-images-idx3-ubyte or train-images-idx3-ubyte.gz in {dir}"),
        ("mnist", r"{dir}/MNIST/raw"),
        ("cifar10", "no data_batch_1, .*, data_batch_5 in {dir}/cifar-10-batches-py or {dir}"),
        ("celeba", "no list_eval_partition.txt and img_align_celeba/ in {dir}/celeba"),
        ("folder", "no images .* in {dir}"),
    ],
)
def test_missing_folder_is_named(tmp_path, name, message):
    with pytest.raises(FileNotFoundError, match=message.format(dir=re.escape(str(tmp_path)))):
        load_images(name, data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba", "folder"])
def test_only_fashion_mnist_has_a_default(name):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_images(name)


def test_data_dir_must_exist(tmp_path):
    message = re.escape(f"data_dir {tmp_path / 'nowhere'} is not a folder")
    with pytest.raises(FileNotFoundError, match=message):
        load_images("fashion-mnist", data_dir=tmp_path / "nowhere")


def test_cifar10_layout(tmp_path, test_images, test_labels):
    # Real Fashion-MNIST images, padded to 32x32 and made RGB, in CIFAR-10's pickled batches.
    rgb = torch.nn.functional.pad(test_images[:60], (2, 2, 2, 2)).expand(-1, 3, -1, -1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, batch in enumerate(batches):
        part = slice(10 * i, 10 * i + 10)
        entry = {"data": rgb[part].reshape(10, -1).numpy(), "labels": test_labels[part].tolist()}
        (folder / batch).write_bytes(pickle.dumps(entry))
    assert torch.equal(load_images("cifar10", "train", data_dir=tmp_path), rgb[:50])
    assert torch.equal(load_images("cifar-10", "test", data_dir=folder), rgb[50:])
    assert torch.equal(load_labels("cifar10", "test", data_dir=tmp_path), test_labels[50:60])
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
        load_images("cifar10", "test", data_dir=tmp_path)


def _save(image: torch.Tensor, path: Path, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[0].numpy()).convert(mode).save(path)


def test_image_folder(tmp_path, test_images, test_labels):
    for split, part in (("train", range(0, 8)), ("test", range(8, 12))):
        for i in part:
            _save(test_images[i], tmp_path / split / f"class{test_labels[i]}" / f"{i:02d}.png")
    images = load_images("folder", "train", data_dir=tmp_path)
    assert torch.equal(images, test_images[:8][test_labels[:8].argsort(stable=True)])
    classes = sorted(set(test_labels[:8].tolist()))
    expected = torch.tensor([classes.index(c) for c in sorted(test_labels[:8].tolist())])
    assert torch.equal(load_labels("folder", "train", data_dir=tmp_path), expected)
    assert load_images("folder", "test", data_dir=tmp_path, image_size=14).shape == (4, 1, 14, 14)


def test_image_folder_bad_input(tmp_path, test_images):
    _save(test_images[0], tmp_path / "a.png")
    _save(test_images[1], tmp_path / "b.png", mode="RGB")
    assert load_images("folder", data_dir=tmp_path).shape == (2, 3, 28, 28)  # grey and RGB
    with pytest.raises(ValueError, match=r"a\.png is in no class subfolder"):
        load_labels("folder", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="has no test/ subfolder"):
        load_images("folder", "test", data_dir=tmp_path)
    Image.fromarray(test_images[2, 0].numpy()).resize((20, 20)).save(tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"c\.png: 20×20 differs from the first image's 28×28"):
        load_images("folder", data_dir=tmp_path)
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"c\.png: not a readable image"):
        load_images("folder", data_dir=tmp_path, image_size=28)


def test_celeba_layout(tmp_path, test_images):
    # Three real Fashion-MNIST images, scaled up to CelebA's aligned 178x218 and made RGB.
    folder = tmp_path / "celeba"
    for i in range(3):
        image = Image.fromarray(test_images[i, 0].numpy()).resize((178, 218)).convert("RGB")
        (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        image.save(folder / "img_align_celeba" / f"{i + 1:06d}.png")
    partition = "000001.png 0\n000002.png 1\n000003.png 2\n"
    (folder / "list_eval_partition.txt").write_text(partition)
    train = load_images("celeba", "train", data_dir=tmp_path)
    assert train.shape == (1, 3, 64, 64)
    assert train.dtype == torch.uint8
    assert load_images("celeba", "test", data_dir=folder, image_size=32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="celeba has attributes, not class labels"):
        load_labels("celeba", data_dir=tmp_path)
    (folder / "list_eval_partition.txt").write_text(partition + "000004.png 0\n")
    with pytest.raises(FileNotFoundError, match=r"1 images are missing, e\.g\. .*000004\.png"):
        load_images("celeba", data_dir=tmp_path)
    (folder / "list_eval_partition.txt").write_text("000001.png train\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:1: bad line"):
        load_images("celeba", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "imagenet"}, "unknown dataset 'imagenet'; expected one of celeba, cifar10"),
        ({"split": "valid"}, "unknown split 'valid'"),
        ({"image_size": 32}, "image_size applies to 'celeba' and 'folder' only"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_images(**kwargs)


# --- Dequantisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dequantize_8_bits(test_images, dtype):
    pixels = test_images[:100]
    x = dequantize(pixels, dtype=dtype)
    assert x.dtype == dtype
    assert x.shape == pixels.shape
    assert (x >= 0).all()
    assert (x < 1).all()
    assert torch.equal((x.double() * 256).floor().long(), pixels.long())
    # The top level, where rounding could reach 1: every pixel 255 stays below 1.
    top = dequantize(torch.full((10000,), 255, dtype=torch.uint8), dtype=dtype)
    assert (top < 1).all()
    assert ((top.double() * 256).floor() == 255).all()
    assert torch.equal(quantize(x), pixels)


@pytest.mark.parametrize("n_bits", [1, 5, 7])
def test_dequantize_fewer_bits(test_images, n_bits):
    pixels = test_images[:100]
    x = dequantize(pixels, n_bits=n_bits)
    assert (x >= 0).all()
    assert (x < 1).all()
    levels = pixels.long() // 2 ** (8 - n_bits)
    assert torch.equal((x * 2**n_bits).floor().long(), levels)
    assert torch.equal(quantize(x, n_bits).long(), levels * 2 ** (8 - n_bits))


def test_dequantize_noise_is_seeded_and_uniform(test_images):
    pixels = test_images[:100]
    draw = [dequantize(pixels, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])
    u = draw[0] * 256 - pixels
    assert abs(u.mean().item() - 0.5) < 0.01
    assert abs(u.var().item() - 1 / 12) < 0.01


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: dequantize(p.float()), TypeError, "needs uint8 pixels in 0..255, got torch.flo"),
        (lambda p: dequantize(p.numpy()), TypeError, "got ndarray"),
        (lambda p: dequantize(p, n_bits=0), ValueError, "n_bits must be an integer in 1..8"),
        (lambda p: dequantize(p, n_bits=9), ValueError, "n_bits must be an integer in 1..8"),
        (lambda p: quantize(p), TypeError, "quantize needs a floating tensor, got torch.uint8"),
    ],
)
def test_dequantize_bad_input(test_images, call, error, message):
    with pytest.raises(error, match=message):
        call(test_images[:2])


def test_image_dataset(test_images, test_labels):
    data = ImageDataset(test_images[:100], test_labels[:100], n_bits=8)
    x, label = data[3]
    assert len(data) == 100
    assert x.shape == (1, 28, 28)
    assert label == test_labels[3]
    again, _ = data[3]
    assert not torch.equal(x, again)  # fresh noise on each access
    assert torch.equal((again * 256).floor(), (x * 256).floor())
    batch, labels = next(iter(DataLoader(data, batch_size=32, shuffle=True)))
    assert batch.shape == (32, 1, 28, 28)
    assert (batch < 1).all()
    assert labels.shape == (32,)
    assert ImageDataset(test_images[:5])[0].shape == (1, 28, 28)
    with pytest.raises(TypeError, match="needs uint8 pixels"):
        ImageDataset(test_images[:5].float())
    with pytest.raises(ValueError, match="do not match 5 images"):
        ImageDataset(test_images[:5], test_labels[:4])


# --- Train/validation split --------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint(test_images, test_labels):
    train, val = train_val_split(test_images, val_fraction=0.1, seed=0)
    assert train.shape == (9000, 1, 28, 28)
    assert val.shape == (1000, 1, 28, 28)
    again_train, again_val = train_val_split(test_images, val_fraction=0.1, seed=0)
    assert torch.equal(train, again_train)
    assert torch.equal(val, again_val)
    index_train, index_val = train_val_split(torch.arange(len(test_images)), 0.1, seed=0)
    assert torch.equal(test_images[index_val], val)
    assert set(index_train.tolist()).isdisjoint(index_val.tolist())
    assert sorted(index_train.tolist() + index_val.tolist()) == list(range(10000))
    _, other_val = train_val_split(torch.arange(len(test_images)), 0.1, seed=1)
    assert not torch.equal(index_val, other_val)
    # Images and labels split alike.
    _, val_labels = train_val_split(test_labels, val_fraction=0.1, seed=0)
    assert torch.equal(val_labels, test_labels[index_val])


def test_split_of_a_dataset(test_images):
    train, val = train_val_split(TensorDataset(test_images[:100]), val_fraction=0.25, seed=3)
    assert isinstance(train, Subset)
    assert (len(train), len(val)) == (75, 25)
    assert set(train.indices).isdisjoint(val.indices)


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.0), (10, 1.0), (10, 0.01), (3, 0.9)])
def test_split_bad_fraction(n, fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(torch.arange(n), val_fraction=fraction)
