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
#: At most this many unreadable images are listed in an error.
_LISTED = 10


def _open(path: Path) -> Image.Image:
    """``Image.open``, with errors that name the file and say what is wrong with it."""
    try:
        return Image.open(path)
    except UnidentifiedImageError as error:
        size = path.stat().st_size
        raise ValueError(
            f"{path}: not a readable image: Pillow cannot identify its format ({size} bytes)"
        ) from error
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: not a readable image: {error}") from error
    except OSError as error:
        if error.errno is None:  # Pillow's own, on the content (a JPEG cut short)
            raise ValueError(f"{path}: corrupt or truncated image ({error})") from error
        # The system's: permission denied, a broken link, an I/O error.
        broken = path.is_symlink() and not path.exists()
        reason = f"a broken link to {os.readlink(path)}" if broken else error.strerror or error
        raise ValueError(f"{path}: cannot be read ({reason})") from error


def _load(path: Path, mode: str, size: int | None, crop: int | None) -> np.ndarray:
    with _open(path) as image:
        try:
            image = image.convert(mode)  # Pillow reads the pixels here
        except (OSError, SyntaxError) as error:
            raise ValueError(f"{path}: corrupt or truncated image ({error})") from error
        except ValueError as error:  # a mode Pillow cannot convert, such as LAB
            raise ValueError(f"{path}: cannot be converted to {mode} ({error})") from error
    if crop is not None:
        if min(image.size) < crop:
            raise ValueError(f"{path}: {image.size} is smaller than the {crop}×{crop} crop")
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    if size is not None:
        image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(image.height, image.width, -1)


def _grey(path: Path) -> bool:
    """Whether the image ``path`` is grey-scale (read from its header only)."""
    with _open(path) as image:
        return image.mode in _GREY_MODES


def _read_images(
    files: Sequence[Path], size: int | None, crop: int | None = None, mode: str | None = None
) -> Tensor:
    r"""Reads ``files`` into ``uint8 [N, C, H, W]``.

    ``mode`` is Pillow's (``"L"`` or ``"RGB"``); by default ``"L"`` if every image is
    grey-scale, else ``"RGB"``. Every file is tried before an unreadable one is reported, so
    that one error lists them all (the first :data:`_LISTED`).
    """
    problems: dict[Path, str] = {}

    def attempt(read, path: Path, *args):
        try:
            return read(path, *args)
        except ValueError as error:
            problems[path] = str(error)
            return None

    if mode is None:
        greys = [attempt(_grey, path) for path in files]
        mode = "L" if all(grey is not False for grey in greys) else "RGB"
    out = None
    for i, path in enumerate(files):
        pixels = None if path in problems else attempt(_load, path, mode, size, crop)
        if pixels is None:
            continue
        if out is None:
            out = np.empty((len(files), *pixels.shape), dtype=np.uint8)
        elif pixels.shape != out.shape[1:]:
            raise ValueError(
                f"{path}: {pixels.shape[1]}×{pixels.shape[0]} differs from the first image's "
                f"{out.shape[2]}×{out.shape[1]}; pass image_size= to resize and centre-crop"
            )
        out[i] = pixels
    if problems:
        raise ValueError(_unreadable(problems, len(files)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _unreadable(problems: dict[Path, str], total: int) -> str:
    """One error for the unreadable images: the problem of each, the first :data:`_LISTED`."""
    if len(problems) == 1:
        return next(iter(problems.values()))
    lines = [problems[path] for path in sorted(problems)][:_LISTED]
    if len(problems) > _LISTED:
        lines.append(f"... and {len(problems) - _LISTED} more")
    return f"{len(problems)} of {total} images cannot be read:\n  " + "\n  ".join(lines)


def _raise_unlistable(error: OSError) -> None:
    """``os.walk``'s ``onerror``: a folder that cannot be listed is an error, not skipped."""
    reason = error.strerror or error
    raise ValueError(f"folder: {error.filename} cannot be listed ({reason})") from error


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
    # Every file with an image's extension, broken links included (they are reported, not
    # skipped); os.walk, unlike Path.rglob, does not skip a subfolder it cannot list.
    found = [
        Path(folder, name)
        for folder, _, names in os.walk(root, onerror=_raise_unlistable)
        for name in names
    ]
    files = sorted(path for path in found if path.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        others = f"; found {len(found)} other files, e.g. {min(found).name}" if found else ""
        raise FileNotFoundError(
            f"folder: no images ({', '.join(IMAGE_EXTENSIONS)}) in {root} or its subfolders{others}"
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
    Grey-scale and colour images may be mixed: all are then read as RGB (a grey pixel
    :math:`v` becomes :math:`(v, v, v)`), and an alpha channel is dropped.

    Args:
        split: ``"train"`` or ``"test"``.
        kind: ``"images"`` or ``"labels"``.
        data_dir: the folder.
        image_size: the side of the square output, or ``None`` to keep the size.

    Raises:
        FileNotFoundError: if the folder or its images are missing (the message says which
            other files it found).
        ValueError: naming the file and the reason, if an image cannot be read (not an image,
            corrupt or truncated, permission denied, a broken link; every file is tried, and
            the error lists the unreadable ones), a subfolder cannot be listed, or sizes
            differ without ``image_size``.
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
