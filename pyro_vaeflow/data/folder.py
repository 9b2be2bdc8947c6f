r"""Image folders (ImageFolder-style) and CelebA (torchvision's layout), read with Pillow."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = ["CELEBA_CROP", "IMAGE_EXTENSIONS", "read_celeba", "read_folder"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: The side of CelebA's centre crop before resizing, as in Dai & Wipf (2019).
CELEBA_CROP = 128
_GREY_MODES = ("1", "L", "LA")
_CELEBA_PARTITION = {"train": "0", "test": "2"}


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def _load(path: Path, mode: str, size: int | None, crop: int | None) -> np.ndarray:
    with _open(path) as image:
        try:
            image = image.convert(mode)
        except OSError as error:
            raise ValueError(f"{path}: corrupt or truncated image ({error})") from error
    if crop is not None:
        if min(image.size) < crop:
            raise ValueError(f"{path}: {image.size} is smaller than the {crop}×{crop} crop")
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    if size is not None:
        image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(image.height, image.width, -1)


def _read_images(
    files: Sequence[Path], size: int | None, crop: int | None = None, mode: str | None = None
) -> Tensor:
    r"""Reads ``files`` into ``uint8 [N, C, H, W]``.

    ``mode`` is Pillow's (``"L"`` or ``"RGB"``); by default ``"L"`` if every image is
    grey-scale, else ``"RGB"``.
    """
    if mode is None:
        greys = []
        for path in files:
            with _open(path) as image:
                greys.append(image.mode in _GREY_MODES)
        mode = "L" if all(greys) else "RGB"
    out = None
    for i, path in enumerate(files):
        pixels = _load(path, mode, size, crop)
        if out is None:
            out = np.empty((len(files), *pixels.shape), dtype=np.uint8)
        elif pixels.shape != out.shape[1:]:
            raise ValueError(
                f"{path}: {pixels.shape[1]}×{pixels.shape[0]} differs from the first image's "
                f"{out.shape[2]}×{out.shape[1]}; pass image_size= to resize and centre-crop"
            )
        out[i] = pixels
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _folder_files(split: str, data_dir: str | os.PathLike | None) -> tuple[Path, list[Path]]:
    if data_dir is None:
        raise FileNotFoundError("the 'folder' dataset needs data_dir= a folder of images")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"folder: data_dir {root} is not a folder")
    if (root / split).is_dir():
        root = root / split
    elif split == "test" or (root / "test").is_dir():
        raise FileNotFoundError(
            f"folder: {root} has no {split}/ subfolder (a folder without train/ and test/ "
            f"subfolders serves only split='train')"
        )
    files = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not files:
        raise FileNotFoundError(
            f"folder: no images ({', '.join(IMAGE_EXTENSIONS)}) in {root} or its subfolders"
        )
    return root, files


def read_folder(
    split: str, kind: str, data_dir: str | os.PathLike | None, image_size: int | None = None
) -> Tensor:
    r"""Reads a folder of images as ``uint8 [N, C, H, W]``, or their class labels as ``int64 [N]``.

    The images are all image files under ``data_dir/<split>/`` if that folder exists, else under
    ``data_dir`` (then only for ``split="train"``), in sorted order. As in torchvision's
    ``ImageFolder``, the label of an image is the index of its top-level subfolder among the
    sorted subfolders. With ``image_size``, each image is resized (shorter side) and
    centre-cropped to ``image_size × image_size``; without it, all must have one size.

    Args:
        split: ``"train"`` or ``"test"``.
        kind: ``"images"`` or ``"labels"``.
        data_dir: the folder.
        image_size: the side of the square output, or ``None`` to keep the size.

    Raises:
        FileNotFoundError: if the folder or its images are missing.
        ValueError: if an image cannot be read, or sizes differ without ``image_size``.
    """
    root, files = _folder_files(split, data_dir)
    if kind == "images":
        return _read_images(files, image_size)
    parts = [path.relative_to(root).parts for path in files]
    loose = [files[i] for i, part in enumerate(parts) if len(part) == 1]
    if loose:
        raise ValueError(f"folder: {loose[0]} is in no class subfolder of {root}, so has no label")
    classes = {name: i for i, name in enumerate(sorted({part[0] for part in parts}))}
    return torch.tensor([classes[part[0]] for part in parts], dtype=torch.long)


def read_celeba(split: str, data_dir: str | os.PathLike | None, image_size: int = 64) -> Tensor:
    r"""Reads CelebA (aligned and cropped) as ``uint8 [N, 3, image_size, image_size]``.

    The layout is torchvision's: ``data_dir/celeba/img_align_celeba/*.jpg`` and
    ``data_dir/celeba/list_eval_partition.txt`` (or the same inside ``data_dir``). The official
    partition gives the splits: ``"train"`` is partition 0 (162 770 images), ``"test"`` is
    partition 2 (19 962). Each image is centre-cropped to :data:`CELEBA_CROP` × CELEBA_CROP (the
    face), then resized to ``image_size`` (bilinear), as in Dai & Wipf (2019).

    Raises:
        FileNotFoundError: naming the files that were expected.
        ValueError: if the partition file or an image is malformed.
    """
    hint = (
        "Expected torchvision's layout <data_dir>/celeba/{img_align_celeba/, "
        "list_eval_partition.txt}. Nothing is downloaded."
    )
    if data_dir is None:
        raise FileNotFoundError(f"celeba is not embedded: pass data_dir=. {hint}")
    folders = [Path(data_dir) / "celeba", Path(data_dir)]
    found = [f for f in folders if (f / "list_eval_partition.txt").is_file()]
    if not found or not (found[0] / "img_align_celeba").is_dir():
        raise FileNotFoundError(
            f"celeba: no list_eval_partition.txt and img_align_celeba/ in {folders[0]} or "
            f"{folders[1]}. {hint}"
        )
    folder = found[0]
    files = []
    lines = (folder / "list_eval_partition.txt").read_text().split("\n")
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{folder / 'list_eval_partition.txt'}:{number}: bad line {line!r}")
        if fields[1] == _CELEBA_PARTITION[split]:
            files.append(folder / "img_align_celeba" / fields[0])
    if not files:
        raise ValueError(f"celeba: {folder / 'list_eval_partition.txt'} lists no {split} images")
    missing = [path for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"celeba: {len(missing)} images are missing, e.g. {missing[0]}")
    return _read_images(files, image_size, crop=CELEBA_CROP, mode="RGB")
