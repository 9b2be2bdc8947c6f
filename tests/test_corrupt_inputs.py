"""Corrupt inputs: IDX/gz files, ``config.json``, image folders and CIFAR-10 batches.

Each corruption gets a ``ValueError`` (or, for missing data, a ``FileNotFoundError``) whose
message names the file and what is wrong with it, and no file is modified: every test compares
the bytes and modification times of every file before and after. The files are small real
Fashion-MNIST subsets (from the Debian package ``dataset-fashion-mnist``), crafted in
``tmp_path`` and then corrupted; the embedded files are only read.

Permission denied is simulated, since ``chmod 000`` denies root nothing and these tests may
run as root: ``open`` or ``os.scandir`` raise the ``PermissionError`` they would raise.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import gzip
import io
import json
import os
import pickle
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vaeflow.cli import main
from pyro_vaeflow.data import load_images, load_labels
from pyro_vaeflow.presets import PRESETS, Preset
from pyro_vaeflow.rundir import RunDir

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    """The first 20 real Fashion-MNIST test images ``uint8 [20, 28, 28]`` and labels."""
    images = load_images("fashion-mnist", "test")[:20, 0].numpy()
    return images, load_labels("fashion-mnist", "test")[:20].byte().numpy()


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def denied(path: Path, read: Callable[[], object]) -> Callable[[], object]:
    """``read``, run while ``open(path)`` raises ``PermissionError``, as for a file its reader
    may not read."""
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    def run():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(builtins, "open", guarded_open)
            return read()

    return run


def check_refused(
    root: Path, read: Callable[[], object], path: Path, problem: str, error=ValueError
) -> str:
    """``read()`` raises ``error`` naming ``path`` and matching ``problem``, and no file under
    ``root`` changes; returns the message."""
    before = snapshot(root)
    with pytest.raises(error, match=problem) as info:
        read()
    assert str(path) in str(info.value)
    assert snapshot(root) == before
    return str(info.value)


# --- IDX files ----------------------------------------------------------------------------------


def _idx(array: np.ndarray, dims: tuple[int, ...] | None = None, code: int = 0x08) -> bytes:
    """An IDX file of ``array``: its header says ``dims`` (default: the array's shape)."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, code, len(dims)]) + b"".join(n.to_bytes(4, "big") for n in dims)
    return header + array.tobytes()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _flip(data: bytes, start: int, count: int = 8) -> bytes:
    return (
        data[:start] + bytes(b ^ 0xFF for b in data[start : start + count]) + data[start + count :]
    )


# Each corruption: the file's bytes from the 20 images' IDX bytes, and the problem named.
IDX_CORRUPTIONS = {
    "gzip-truncated": (
        lambda x: _gz(_idx(x))[:4000],
        "corrupt or truncated gzip file: the compressed data end before the end-of-stream marker",
    ),
    "gzip-crc": (
        lambda x: _flip(_gz(_idx(x)), len(_gz(_idx(x))) - 8, 4),
        "corrupt or truncated gzip file: CRC check failed",
    ),
    "gzip-bad-deflate": (
        lambda x: _flip(_gz(_idx(x)), 20),
        "corrupt or truncated gzip file: Error -3 while decompressing data",
    ),
    "gzip-trailing-garbage": (
        lambda x: _gz(_idx(x)) + b"garbage",
        "corrupt or truncated gzip file: Not a gzipped file",
    ),
    "wrong-magic": (
        lambda x: _gz(b"\x08\x03\x00\x00" + _idx(x)[4:]),
        "bad magic number 0x08030000: an IDX file starts with two zero bytes",
    ),
    "not-gzip-but-named-gz": (
        lambda x: b"PK\x03\x04" + _idx(x),  # a zip archive, say
        "bad magic number 0x504b0304: .*; named .gz but not gzip-compressed",
    ),
    "unknown-type-code": (
        lambda x: _gz(_idx(x, code=0x42)),
        r"bad magic number 0x00004203: unknown type code 42 \(expected one of 08, 09, 0b",
    ),
    "zero-dimensions": (
        lambda x: _gz(_idx(x, dims=())),
        "bad magic number 0x00000800: 0 dimensions",
    ),
    "wrong-dtype": (
        lambda x: _gz(_idx(x.astype(">i4"), code=0x0C)),
        r"expected uint8 images \[N, H, W\], found torch.int32 data of shape \(20, 28, 28\)",
    ),
    "payload-truncated": (
        lambda x: _gz(_idx(x)[:-7]),
        r"IDX file truncated: shape \(20, 28, 28\) of uint8 needs 15680 bytes of data, "
        r"found 15673",
    ),
    "payload-trailing-bytes": (
        lambda x: _gz(_idx(x) + b"\x00\x00"),
        r"IDX file has trailing bytes: shape \(20, 28, 28\) .* needs 15680 .*, found 15682",
    ),
    "header-promises-more": (
        lambda x: _gz(_idx(x, dims=(60000, 28, 28))),
        r"IDX file truncated: shape \(60000, 28, 28\) of uint8 needs 47040000 bytes of data, "
        r"found 15680",
    ),
    "header-cut": (
        lambda x: _gz(_idx(x)[:10]),
        "truncated IDX header: 3 dimensions need 16 bytes, the file has 10",
    ),
    "empty-file": (lambda x: b"", "not an IDX file: 0 bytes, shorter than the header"),
    "no-images": (
        lambda x: _gz(_idx(x[:0])),
        r"holds no images \(its header gives the shape \(0, 28, 28\)\)",
    ),
}


@pytest.mark.parametrize("kind", IDX_CORRUPTIONS)
def test_a_corrupt_idx_file_is_named(tmp_path, fashion, kind):
    corrupt, problem = IDX_CORRUPTIONS[kind]
    path = tmp_path / IMAGES
    path.write_bytes(corrupt(fashion[0]))
    read = partial(load_images, "fashion-mnist", "test", data_dir=tmp_path)
    message = check_refused(tmp_path, read, path, problem)
    assert ("named .gz" in message) == (kind == "not-gzip-but-named-gz")


def test_a_corrupt_labels_file_is_named(tmp_path, fashion):
    path = tmp_path / LABELS
    path.write_bytes(_gz(_idx(fashion[1]))[:30])
    read = partial(load_labels, "fashion-mnist", "test", data_dir=tmp_path)
    check_refused(tmp_path, read, path, "corrupt or truncated gzip file")


def test_an_unreadable_idx_file_is_named(tmp_path, fashion):
    path = tmp_path / IMAGES
    path.write_bytes(_gz(_idx(fashion[0])))
    read = denied(path, partial(load_images, "fashion-mnist", "test", data_dir=tmp_path))
    check_refused(tmp_path, read, path, r"cannot be read \(Permission denied\)")


def test_a_crafted_idx_file_reads_back(tmp_path, fashion):
    # The control: the same crafted files, uncorrupted, read back exactly.
    (tmp_path / IMAGES).write_bytes(_gz(_idx(fashion[0])))
    (tmp_path / LABELS).write_bytes(_idx(fashion[1]))  # plain, under a .gz name
    images = load_images("fashion-mnist", "test", data_dir=tmp_path)
    assert torch.equal(images[:, 0], torch.from_numpy(fashion[0]))
    assert load_labels("fashion-mnist", "test", data_dir=tmp_path).tolist() == list(fashion[1])


def test_the_cli_names_a_corrupt_idx_file_and_writes_no_run(tmp_path, fashion, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    path = data / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gz(_idx(fashion[0]))[:-100])
    before = snapshot(data)
    status = main(["train", "--run-dir", str(run), "--data-dir", str(data), "--quiet"])
    assert status == 2
    message = capsys.readouterr().err
    assert f"pyro-vaeflow train: error: {path}: corrupt or truncated gzip file" in message
    assert snapshot(data) == before
    assert not (run / "config.json").exists()


# --- config.json ---------------------------------------------------------------------------------

CONFIG = "runs/x/config.json"


def _config(**changes) -> dict:
    """The cpu preset's ``config.json`` data as JSON reads it back, with ``changes``."""
    return {**json.loads(json.dumps(PRESETS["cpu"].to_dict())), **changes}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"batch_size": "64"}, "field 'batch_size' must be an integer >= 1, got '64'"),
        ({"batch_size": 64.0}, "field 'batch_size' must be an integer >= 1, got 64.0"),
        ({"batch_size": True}, "field 'batch_size' must be an integer >= 1, got True"),
        ({"batch_size": 0}, "field 'batch_size' must be an integer >= 1, got 0"),
        ({"lr": "1e-3"}, "field 'lr' must be a finite number > 0, got '1e-3'"),
        ({"lr": float("nan")}, "field 'lr' must be a finite number > 0, got nan"),
        ({"lr": 0}, "field 'lr' must be a finite number > 0, got 0"),
        ({"image_shape": [1, 28]}, r"field 'image_shape' must be \(C, H, W\), .*, got \[1, 28\]"),
        ({"image_shape": "1,28,28"}, r"field 'image_shape' .*, got '1,28,28'"),
        ({"model": ["latent_dim", 32]}, "field 'model' must be a dict of the model's keyword"),
        ({"binarize": "false"}, "field 'binarize' must be true or false, got 'false'"),
        ({"epochs": {"vae": "6"}}, r"field 'epochs' must be .*, got \{'vae': '6'\}"),
        ({"epochs": {}}, r"field 'epochs' must be a non-empty dict .*, got \{\}"),
        ({"epochs": [6, 4]}, r"field 'epochs' must be .*, got \[6, 4\]"),
        ({"time_budget": "840"}, r"field 'time_budget' must be a number of seconds >= 0 \(inf"),
        ({"time_budget": -1}, r"field 'time_budget' .* or None, got -1"),
        ({"lr_halve_every": 2.5}, "field 'lr_halve_every' must be an integer >= 0 or None"),
        ({"is_samples": None}, "field 'is_samples' must be an integer >= 1, got None"),
        ({"temperature": None}, "field 'temperature' must be a finite number >= 0, got None"),
        ({"name": 5}, "field 'name' must be a string, got 5"),
        ({"checkpoint_every": 5}, r"unknown preset fields \['checkpoint_every'\] \(written by a"),
        ({"vae_epochs": "3"}, "field 'vae_epochs' must be an integer >= 0, got '3'"),
        ({"joint": "yes"}, "field 'joint' must be true or false, got 'yes'"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else None,
)
def test_a_config_field_of_a_wrong_type_is_named(changes, problem):
    data = _config(**changes)
    if {"vae_epochs", "joint"} & changes.keys():  # the layout before epochs per phase
        del data["epochs"]
    with pytest.raises(ValueError, match=re.escape(CONFIG) + ": " + problem):
        Preset.from_dict(data, source=CONFIG)
    with pytest.raises(ValueError, match="^" + problem):  # without a source, the field alone
        Preset.from_dict(data)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Preset)])
def test_every_field_is_checked(name):
    with pytest.raises(ValueError, match=f"{re.escape(CONFIG)}: field '{name}' must be .*, got "):
        Preset.from_dict(_config(**{name: ["not", "this"]}), source=CONFIG)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "expected an object of preset fields, got list"),
        (None, "expected an object of preset fields, got NoneType"),
        ({"name": "cpu"}, r"missing preset fields \['description', 'dataset', 'image_shape'\]"),
    ],
)
def test_a_config_that_is_not_a_preset_is_named(data, problem):
    with pytest.raises(ValueError, match=f"{re.escape(CONFIG)}: {problem}"):
        Preset.from_dict(data, source=CONFIG)


def test_configs_of_older_versions_still_read():
    # The first config.json layout: two fixed phases, no architecture, binarize, warmup_steps
    # or val_images; infinite budgets and null limits are valid values.
    first = _config(vae_epochs=6, glow_epochs=4)
    for key in ("epochs", "architecture", "binarize", "warmup_steps", "val_images"):
        del first[key]
    preset = Preset.from_dict(first, source=CONFIG)
    assert preset.epochs == {"vae": 6, "glow": 4}
    assert preset.warmup_steps == Preset.warmup_steps
    assert preset == PRESETS["cpu"]
    text = json.dumps(_config(time_budget=float("inf"), lr_halve_every=None, clip_norm=None))
    assert Preset.from_dict(json.loads(text)).time_budget == float("inf")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"name": "cpu", "batch', "is not valid JSON"),
        (json.dumps(_config(batch_size="64")), "field 'batch_size' must be an integer >= 1"),
        (json.dumps(_config(colour="red")), r"unknown preset fields \['colour'\]"),
    ],
    ids=["invalid-json", "wrong-type", "unknown-field"],
)
@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_the_cli_refuses_a_corrupt_config_and_overwrites_nothing(
    tmp_path, capsys, text, problem, command
):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text(text)
    run.metrics_path.write_text('{"fid": 1.0}')  # what an earlier run left
    before = snapshot(run.path)
    extra = ["--resume", "--quiet"] if command == "train" else ["--quiet"]
    status = main([command, "--run-dir", str(run.path), *extra])
    message = capsys.readouterr().err
    assert status == 2
    assert re.search(f"pyro-vaeflow {command}: error: .*{problem}", message), message
    assert str(run.config_path) in message
    written = {name: data for name, data in snapshot(run.path).items() if name in before}
    assert written == before
    assert not run.model_path.exists()
    assert not run.has_checkpoints()


# --- Image folders ------------------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _image_folder(root: Path, images: np.ndarray) -> list[Path]:
    """Eight real images in two class folders, as PNG (one JPEG); returns their paths."""
    paths = []
    for i, pixels in enumerate(images[:8]):
        path = root / "train" / f"class{i % 2}" / f"{i:02d}.{'jpg' if i == 7 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(pixels) if i == 7 else _png(pixels))
        paths.append(path)
    return paths


# Each corruption of the image 02.png: its new bytes, from its pixels, and the problem named.
IMAGE_CORRUPTIONS = {
    "not-an-image": (
        lambda x: b"<html>404</html>",
        r"not a readable image: Pillow cannot identify its format \(16 bytes\)",
    ),
    "empty-file": (lambda x: b"", r"Pillow cannot identify its format \(0 bytes\)"),
    "png-truncated": (
        lambda x: _png(x)[:200],
        r"corrupt or truncated image \(image file is truncated",
    ),
    "png-header-only": (lambda x: _png(x)[:40], "not a readable image"),
    "png-corrupt-data": (
        lambda x: _flip(_png(x), 100),
        r"corrupt or truncated image \(broken data stream",
    ),
    "jpeg-truncated": (
        lambda x: _jpeg(x)[: len(_jpeg(x)) // 2],
        r"corrupt or truncated image \(",
    ),
}


@pytest.mark.parametrize("kind", IMAGE_CORRUPTIONS)
def test_a_corrupt_image_is_named(tmp_path, fashion, kind):
    corrupt, problem = IMAGE_CORRUPTIONS[kind]
    path = _image_folder(tmp_path, fashion[0])[2]
    if kind == "jpeg-truncated":
        path = path.with_suffix(".jpg")
        path.parent.joinpath("02.png").rename(path)
    path.write_bytes(corrupt(fashion[0][2]))
    read = partial(load_images, "folder", "train", data_dir=tmp_path)
    message = check_refused(tmp_path, read, path, problem)
    assert message.startswith(f"{path}: ")  # one bad image: its own message, alone


def test_an_unreadable_image_is_named(tmp_path, fashion):
    path = _image_folder(tmp_path, fashion[0])[3]
    read = denied(path, partial(load_images, "folder", "train", data_dir=tmp_path))
    check_refused(tmp_path, read, path, r"cannot be read \(Permission denied\)")


def test_a_broken_link_is_named(tmp_path, fashion):
    path = _image_folder(tmp_path, fashion[0])[0].with_name("lost.png")
    path.symlink_to(tmp_path / "elsewhere.png")
    read = partial(load_images, "folder", "train", data_dir=tmp_path)
    check_refused(tmp_path, read, path, r"cannot be read \(a broken link to .*elsewhere\.png\)")


def test_an_unlistable_subfolder_is_named_not_skipped(tmp_path, fashion):
    # Path.rglob skips a folder it may not list: the class would vanish and the labels shift.
    folder = _image_folder(tmp_path, fashion[0])[1].parent
    real_scandir = os.scandir

    def guarded_scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    def read(load):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "scandir", guarded_scandir)
            load("folder", "train", data_dir=tmp_path)

    for load in (load_images, load_labels):
        problem = r"folder: .* cannot be listed \(Permission denied\)"
        check_refused(tmp_path, partial(read, load), folder, problem)


def test_every_unreadable_image_is_listed_in_one_error(tmp_path, fashion):
    paths = _image_folder(tmp_path, fashion[0])
    for path in paths[1:4]:
        path.write_bytes(_png(fashion[0][0])[:150])
    paths[5].write_bytes(b"")
    read = partial(load_images, "folder", "train", data_dir=tmp_path)
    message = check_refused(tmp_path, read, paths[1], "4 of 8 images cannot be read:")
    listed = [line.split(": ")[0].strip() for line in message.splitlines()[1:]]
    assert listed == sorted(str(path) for path in (*paths[1:4], paths[5]))


def test_a_folder_without_images_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("the images are elsewhere")
    read = partial(load_images, "folder", "train", data_dir=tmp_path)
    problem = r"no images \(.*\) in .* or its subfolders; found 1 other files, e\.g\. notes\.txt"
    check_refused(tmp_path, read, tmp_path, problem, error=FileNotFoundError)


def test_a_corrupt_celeba_image_is_named(tmp_path, fashion):
    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    for i in range(2):
        image = Image.fromarray(fashion[0][i]).resize((178, 218)).convert("RGB")
        image.save(folder / "img_align_celeba" / f"{i + 1:06d}.jpg")
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    path = folder / "img_align_celeba" / "000002.jpg"
    path.write_bytes(path.read_bytes()[:500])
    read = partial(load_images, "celeba", "train", data_dir=tmp_path)
    check_refused(tmp_path, read, path, "corrupt or truncated image")


# --- CIFAR-10 batches ---------------------------------------------------------------------------


def _cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    rgb = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None].repeat(3, axis=1)
    return pickle.dumps({"data": rgb.reshape(len(rgb), -1), "labels": labels.tolist()})


CIFAR_CORRUPTIONS = {
    "truncated-pickle": (
        lambda x, y: _cifar_batch(x, y)[:1000],
        "not a CIFAR-10 python batch: a corrupt or truncated pickle",
    ),
    "empty-file": (lambda x, y: b"", r"a corrupt or truncated pickle \(EOFError"),
    "cifar-100-keys": (
        lambda x, y: pickle.dumps({"data": x, "fine_labels": [0]}),
        r"expected a dict with 'data' and 'labels', found \['data', 'fine_labels'\]",
    ),
    "labels-out-of-range": (
        lambda x, y: _cifar_batch(x, y + 10),
        r"labels must be classes 0\.\.9, found 10\.\.19",
    ),
}


@pytest.mark.parametrize("kind", CIFAR_CORRUPTIONS)
def test_a_corrupt_cifar10_batch_is_named(tmp_path, fashion, kind):
    corrupt, problem = CIFAR_CORRUPTIONS[kind]
    path = tmp_path / "test_batch"
    path.write_bytes(corrupt(*fashion))
    read = partial(load_images, "cifar10", "test", data_dir=tmp_path)
    check_refused(tmp_path, read, path, problem)


def test_an_unreadable_cifar10_batch_is_named(tmp_path, fashion):
    path = tmp_path / "test_batch"
    path.write_bytes(_cifar_batch(*fashion))
    assert load_images("cifar10", "test", data_dir=tmp_path).shape == (20, 3, 32, 32)
    read = denied(path, partial(load_images, "cifar10", "test", data_dir=tmp_path))
    check_refused(tmp_path, read, path, r"cannot be read \(Permission denied\)")
