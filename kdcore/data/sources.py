"""Where each dataset's pixels come from, turned into CPU tensors once.

Every `read_*` function reads local files only and raises DatasetMissingError when they are absent;
`download` is the one place that reaches the network. Keeping the two apart lets load_dataset cache
the (expensive) reading and retry it after a download."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdcore import paths
from kdcore.data.idx import read_idx
from kdcore.data.registry import (
    DIGIT_NAMES,
    FASHION_MNIST_CLASSES,
    IMAGEFOLDER_SHAPE,
    dataset_info,
)
from kdcore.errors import DatasetMissingError, KDError


@dataclass(frozen=True)
class RawData:
    """A dataset as read from disk, before splitting and normalising. Never modified in place (it is cached)."""

    x: Tensor  # (N, C, H, W): uint8 in 0..255 or float32 in [0, 1]
    y: Tensor  # int64 (N,)
    test_x: Tensor | None  # the official test split; None when the dataset has none (digits, image folders)
    test_y: Tensor | None
    class_names: tuple[str, ...]
    source: str  # where it was read from, for logs and the UI


# ----------------------------------------------------------------------------- digits


DIGITS_ASSET = Path(__file__).resolve().parents[1] / "assets" / "digits.npz"


def read_digits() -> RawData:
    """scikit-learn's digits from the copy shipped in kdcore/assets (scripts/make_digits_asset.py wrote it):
    importing scikit-learn would cost about a second of every run's start-up."""
    with np.load(DIGITS_ASSET) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # 0..16 -> [0, 1]
    y = torch.from_numpy(labels.astype(np.int64))
    return RawData(x, y, None, None, DIGIT_NAMES, "scikit-learn's digits (shipped copy)")


# ----------------------------------------------------------------------------- fashion-mnist

_IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_dir(candidates: list[Path]) -> Path | None:
    """The first directory holding all four (Fashion-)MNIST IDX files, plain or gzipped."""
    for directory in candidates:
        if directory.is_dir() and all(_idx_file(directory, stem) for stem in _IDX_STEMS.values()):
            return directory
    return None


def _idx_files(directory: Path) -> dict[str, Path]:
    return {key: _idx_file(directory, stem) for key, stem in _IDX_STEMS.items()}


def _files_key(files: dict[str, Path]) -> str:
    """The files' paths, sizes and modification times: a changed or moved file changes it."""
    return "\n".join(f"{k}={p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for k, p in sorted(files.items()))


def _decoded_cache_file(files: dict[str, Path]) -> Path:
    """Where the decoded arrays of these IDX files are kept: named after the files, so a changed or moved file is
    decoded afresh."""
    return paths.cache_folder("decoded") / (hashlib.sha1(_files_key(files).encode()).hexdigest()[:20] + ".npz")


def local_files_key(name: str, root: Path) -> str | None:
    """What identifies the local files dataset `name` would be read from (their paths, sizes and times), found
    without reading them; None where there is no such cheap identity (the embedded digits, image folders,
    torchvision's formats) or no file yet."""
    if name == "fashion-mnist":
        directory = find_idx_dir(fashion_mnist_dirs(root))
        if directory is not None:
            return f"{name}\n{_files_key(_idx_files(directory))}"
    return None


def _read_idx_files(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The IDX files' arrays. Decoding the gzipped Fashion-MNIST takes ~0.5 s of every run's start-up, so the
    decoded arrays are kept once in the cache folder (an uncompressed .npz, ~55 MB); without a writable
    cache the files are decoded every time."""
    def load(path: Path) -> dict[str, np.ndarray] | None:
        with np.load(path) as saved:
            return {k: saved[k] for k in files} if set(saved.files) == set(files) else None

    def save(arrays: dict[str, np.ndarray], path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **arrays)

    return paths.cached(_decoded_cache_file(files), load,
                        lambda: {key: read_idx(path) for key, path in files.items()}, save)


def read_idx_dir(directory: Path, class_names: tuple[str, ...]) -> RawData:
    arrays = _read_idx_files(_idx_files(directory))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise KDError(
                f"The {split} IDX files in {directory} do not match: images {images.shape}, labels {labels.shape}."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise KDError(f"The {split} labels in {directory} are outside 0..{len(class_names) - 1}.")

    def images(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.uint8, copy=False)).unsqueeze(1)

    def labels(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return RawData(
        images(arrays["train_x"]), labels(arrays["train_y"]),
        images(arrays["test_x"]), labels(arrays["test_y"]),
        class_names, f"IDX files in {directory}",
    )


def fashion_mnist_dirs(root: Path) -> list[Path]:
    """Local IDX folders tried in order: <root>/fashion-mnist, $KD_DATA_DIR/fashion-mnist, Debian's package."""
    # paths.DEBIAN_FASHION_MNIST is looked up on each call, so tests (and users) can move it

    dirs = [root / "fashion-mnist", paths.data_root() / "fashion-mnist", Path(paths.DEBIAN_FASHION_MNIST)]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def read_fashion_mnist(root: Path, local_dirs: list[Path]) -> RawData:
    directory = find_idx_dir(local_dirs)
    if directory is not None:
        return read_idx_dir(directory, FASHION_MNIST_CLASSES)
    return read_torchvision("fashion-mnist", root)  # a previous torchvision download under root


# ----------------------------------------------------------------------------- torchvision datasets

# name -> (torchvision class name, what the user should put under root)
_TORCHVISION = {
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/ with the four IDX files"),
    "mnist": ("MNIST", "MNIST/raw/ with the four IDX files"),
    "cifar10": ("CIFAR10", "the extracted cifar-10-batches-py folder"),
    "cifar100": ("CIFAR100", "the extracted cifar-100-python folder"),
    "svhn": ("SVHN", "train_32x32.mat and test_32x32.mat"),
}


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name][0])
    if name == "svhn":
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def _as_nchw_uint8(data, channels_last: bool) -> Tensor:
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, Tensor) else data
    if x.ndim == 3:  # (N, H, W) grey
        x = x.unsqueeze(1)
    elif channels_last:
        x = x.permute(0, 3, 1, 2)
    return x.to(torch.uint8).contiguous()


def read_torchvision(name: str, root: Path) -> RawData:
    """Read a torchvision dataset already on disk under root (never downloads)."""
    info = dataset_info(name)
    splits = []
    for train in (True, False):
        try:
            ds = _torchvision_split(name, root, train, download=False)
        except RuntimeError as err:
            if "not found" in str(err).lower():
                raise DatasetMissingError(missing_message(name, root, download_error=None)) from None
            raise KDError(f"{info.title} files under {root} could not be read ({_short(err)}).") from None
        except (OSError, ValueError, TypeError, AssertionError, EOFError) as err:
            raise KDError(f"{info.title} files under {root} could not be read ({_short(err)}).") from None
        labels = getattr(ds, "targets", None)
        if labels is None:
            labels = ds.labels  # SVHN
        x = _as_nchw_uint8(ds.data, channels_last=name in ("cifar10", "cifar100"))
        splits.append((x, torch.as_tensor(np.asarray(labels), dtype=torch.int64)))
    (train_x, train_y), (test_x, test_y) = splits
    return RawData(train_x, train_y, test_x, test_y, info.class_names, f"torchvision {name} under {root}")


def download(name: str, root: Path) -> None:
    """Fetch a torchvision dataset into root; any failure becomes one DatasetMissingError sentence."""
    if name not in _TORCHVISION:
        raise DatasetMissingError(missing_message(name, root, download_error=None))
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            _torchvision_split(name, root, train, download=True)
    except Exception as err:  # network, disk, checksum: all mean "not available", said once
        raise DatasetMissingError(missing_message(name, root, download_error=err)) from None


def _short(err: BaseException) -> str:
    """An exception as a short clause that fits inside one sentence."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = re.sub(r"\.\s+", "; ", text).rstrip(". ")
    return text if len(text) <= 160 else text[:157] + "..."


def missing_message(name: str, root: Path, download_error: BaseException | None) -> str:
    """One sentence: what is missing, where we looked, and how to get it."""
    info = dataset_info(name)
    failed, remedy = "", "allow the download"
    if download_error is not None:
        failed, remedy = f" and the download failed ({_short(download_error)})", "retry with internet access"
    if name == "fashion-mnist":
        *first, last = [str(d) for d in fashion_mnist_dirs(root)]
        where = f"{', '.join(first)} or {last}" if first else last
        return (
            f"Fashion-MNIST not found in {where}{failed}; install Debian's dataset-fashion-mnist or put the "
            f"IDX files in $KD_DATA_DIR/fashion-mnist, or {remedy}."
        )
    if name in _TORCHVISION:
        what = _TORCHVISION[name][1]
        return f"{info.title} not found in {root}{failed}; put {what} there, or {remedy}."
    return f"{info.title} not found in {root}{failed}."


# ----------------------------------------------------------------------------- image folders


def resolve_under_root(root: Path, path: str | os.PathLike | None) -> Path:
    """Resolve `path` (relative to the data root) and refuse anything that lands outside the root."""
    root = Path(root).resolve()
    if path is None or not str(path).strip():
        raise KDError(f"The image folder dataset needs a folder path relative to the data root {root}.")
    try:
        target = (root / Path(path)).resolve()  # follows symlinks, so a link pointing out is caught here
    except (OSError, ValueError, RuntimeError) as err:
        raise KDError(f"Image folder path '{path}' cannot be used ({_short(err)}).") from None
    if not target.is_relative_to(root):
        raise KDError(f"Image folder '{path}' is outside the data root {root}; put the images under it.")
    return target


def _class_folders(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _image_files(class_dir: Path, root: Path) -> list[Path]:
    """Image files below class_dir in ImageFolder's order; follows links inside the root, refuses links out."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files: list[Path] = []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = Path(dirpath).resolve()
        if not real.is_relative_to(root):
            raise KDError(f"Image folder entry {dirpath} links outside the data root {root}; remove the link.")
        if real in seen:  # a link cycle: do not walk it again
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.lower().endswith(IMG_EXTENSIONS) and not fname.startswith("."):
                file = Path(dirpath) / fname
                if not file.resolve().is_relative_to(root):
                    raise KDError(f"Image {file} links outside the data root {root}; remove the link.")
                files.append(file)
    return files


def _read_image(file: Path, size: tuple[int, int]) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            rgb = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise KDError(f"Image {file} could not be read ({_short(err)}).") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def imagefolder_classes(root: Path, path: str | os.PathLike | None) -> tuple[Path, list[str]]:
    """The resolved folder and its class subfolders (no image is opened)."""
    folder = resolve_under_root(root, path)
    if not folder.is_dir():
        raise DatasetMissingError(
            f"Image folder {folder} does not exist; create it under {Path(root).resolve()} "
            f"with one subfolder of images per class."
        )
    classes = _class_folders(folder)
    if len(classes) < 2:
        raise DatasetMissingError(
            f"Image folder {folder} has {len(classes)} class subfolders; it needs at least two, "
            f"one per class, each holding images."
        )
    return folder, classes


def read_imagefolder(root: Path, path: str | os.PathLike | None) -> RawData:
    root = Path(root).resolve()
    folder, classes = imagefolder_classes(root, path)
    _, height, width = IMAGEFOLDER_SHAPE
    images: list[Tensor] = []
    labels: list[int] = []
    empty: list[str] = []
    for index, cls in enumerate(classes):
        files = _image_files(folder / cls, root)
        if not files:
            empty.append(cls)
        for file in files:
            images.append(_read_image(file, (height, width)))
            labels.append(index)
    if empty:
        raise DatasetMissingError(
            f"Image folder {folder} has no images in {', '.join(empty)} (expected .png, .jpg and similar files)."
        )
    x = torch.stack(images)
    y = torch.tensor(labels, dtype=torch.int64)
    return RawData(x, y, None, None, tuple(classes), f"image folder {folder}")
