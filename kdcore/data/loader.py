"""load_dataset: read (once per process), split deterministically, normalise, and put the tensors on a device.

Splitting and normalising Fashion-MNIST's 70,000 images takes ~0.2 s of every run's start-up; the result depends
only on the files and the split arguments, so it is kept in the cache folder and memory-mapped back (no copy:
pages are read as batches touch them)."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.serialization import config as torch_serialization_config

from kdcore import paths
from kdcore.data import sources
from kdcore.data.batches import stratified_split
from kdcore.data.bundle import DatasetBundle, TensorSplit
from kdcore.data.registry import DatasetInfo, dataset_info
from kdcore.errors import DatasetMissingError, KDError

# Datasets without an official test split (digits, image folders) hold out this share of every class
# as test, always with the same seed, so runs with different `seed`s are scored on the same samples.
HELD_OUT_TEST_FRACTION = 0.2
HELD_OUT_TEST_SEED = 20_240_917

_DOWNLOADABLE = {"fashion-mnist", "mnist", "cifar10", "cifar100", "svhn"}

# Part of the kept splits' names: change it whenever splitting or normalising below changes, so that splits kept
# by an older version are built afresh rather than served.
SPLITS_FORMAT = 1
_SPLIT_NAMES = ("train", "val", "test")


@functools.lru_cache(maxsize=4)  # a few datasets' CPU tensors; CIFAR-sized ones are ~180 MB as uint8
def _read_cached(name: str, root: str, path: str | None, local_dirs: tuple[str, ...]) -> sources.RawData:
    """Read from local files only; a DatasetMissingError is raised (and so not cached)."""
    if name == "digits":
        return sources.read_digits()
    if name == "fashion-mnist":
        return sources.read_fashion_mnist(Path(root), [Path(d) for d in local_dirs])
    if name == "imagefolder":
        return sources.read_imagefolder(Path(root), path)
    return sources.read_torchvision(name, Path(root))


def clear_cache() -> None:
    """Forget every dataset read in this process (e.g. after files under the data root changed)."""
    _read_cached.cache_clear()


def _cache_key(name: str, root: Path, path: str | None) -> tuple:
    if name == "digits":  # embedded: root and path do not matter
        return (name, "", None, ())
    local_dirs = tuple(str(d) for d in sources.fashion_mnist_dirs(root)) if name == "fashion-mnist" else ()
    return (name, str(root.resolve()), None if path is None else str(path), local_dirs)


def read_raw(name: str, *, root: str | Path | None = None, download: bool = True, path: str | None = None
             ) -> sources.RawData:
    """The dataset's CPU tensors before splitting (cached), downloading once when allowed."""
    name = dataset_info(name).name
    root_path = Path(root).expanduser() if root is not None else paths.data_root()
    key = _cache_key(name, root_path, path)
    try:
        return _read_cached(*key)
    except DatasetMissingError:
        if not download or name not in _DOWNLOADABLE:
            raise
    sources.download(name, root_path)
    return _read_cached(*key)


def describe_imagefolder(path: str, *, root: str | Path | None = None) -> DatasetInfo:
    """DatasetInfo of an image folder from its class subfolders, without opening an image."""
    root_path = Path(root).expanduser() if root is not None else paths.data_root()
    _, classes = sources.imagefolder_classes(root_path, path)
    return replace(dataset_info("imagefolder"), num_classes=len(classes), class_names=tuple(classes))


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (population) of images in [0, 1] units, as float64 on x's device."""
    if x.dtype == torch.uint8:  # exact and cheap from a 256-bin histogram; no float copy needed
        levels = torch.arange(256, dtype=torch.float64, device=x.device) / 255.0
        means, stds = [], []
        for c in range(x.shape[1]):
            counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
            total = counts.sum().clamp_min(1.0)
            mean = (counts * levels).sum() / total
            var = (counts * levels.square()).sum() / total - mean.square()
            means.append(mean)
            stds.append(var.clamp_min(0.0).sqrt())
        return torch.stack(means), torch.stack(stds)
    std, mean = torch.std_mean(x.double(), dim=(0, 2, 3), correction=0)
    return mean, std


def _normalised(x: Tensor, mean: Tensor, std: Tensor, device: torch.device | str) -> Tensor:
    """A fresh float32 tensor (x / 255 for uint8 - mean) / std on device; the cached x is never touched.

    The compact uint8 tensor moves first (4x less to copy to a GPU) and the arithmetic runs in place on
    the new float copy, which is several times faster than out-of-place expressions on big splits."""
    x = x.to(device)
    shape = (1, -1, 1, 1)
    if x.dtype == torch.uint8:
        out, scale = x.float(), 255.0
    else:
        out, scale = x.to(torch.float32, copy=True), 1.0
    mean = (mean * scale).to(device=out.device, dtype=torch.float32).view(shape)
    std = (std * scale).to(device=out.device, dtype=torch.float32).view(shape)
    return out.sub_(mean).div_(std)


def load_dataset(
    name: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    root: str | Path | None = None,
    download: bool = True,
    path: str | None = None,
) -> DatasetBundle:
    """Train/val/test tensors on `device`, normalised per channel with the train split's mean and std.

    Validation is `val_fraction` of the official train split (of the non-test pool for datasets without
    an official test split), class-stratified and drawn with `seed`; the same arguments give the same
    splits. Raises DatasetMissingError (one sentence on how to get the data) when it is not available."""
    info = dataset_info(name)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise KDError(f"val_fraction must be at least 0 and below 1, got {val_fraction}.")
    root_path = Path(root).expanduser() if root is not None else paths.data_root()
    source = sources.local_files_key(info.name, root_path)

    def build(on: torch.device | str) -> DatasetBundle:
        raw = read_raw(info.name, root=root_path, download=download, path=path)
        return split_and_normalise(raw, info, float(val_fraction), seed, on)

    if source is None:  # no cheap identity for the files: split and normalise them each time
        return build(device)
    key = (f"{source}|val_fraction {float(val_fraction)!r}|seed {int(seed)}|held out {HELD_OUT_TEST_FRACTION!r} "
           f"{HELD_OUT_TEST_SEED}|format {SPLITS_FORMAT}|torch {torch.__version__}")
    kept_name = hashlib.sha1(key.encode()).hexdigest()[:24]
    bundle = paths.cached(paths.cache_folder("splits") / f"{kept_name}.pt",
                          lambda file: _read_kept_splits(file, info), lambda: build("cpu"), _keep_splits)
    return replace(bundle, key=f"splits {kept_name}").to(device)


def split_and_normalise(raw: sources.RawData, info: DatasetInfo, val_fraction: float, seed: int,
                        device: torch.device | str) -> DatasetBundle:
    """The bundle of load_dataset from the dataset as read (raw is left untouched)."""
    if raw.class_names != info.class_names:  # image folders: classes come from the folder
        info = replace(info, num_classes=len(raw.class_names), class_names=raw.class_names)
    info = replace(info, input_shape=tuple(raw.x.shape[1:]))

    # index_select gathers whole rows, about twice as fast as indexing with a tensor for the same result
    if raw.test_x is None:
        pool, test_index = stratified_split(raw.y, HELD_OUT_TEST_FRACTION, HELD_OUT_TEST_SEED)
        test_x, test_y = raw.x.index_select(0, test_index), raw.y[test_index]
    else:
        pool = torch.arange(len(raw.y))
        test_x, test_y = raw.test_x, raw.test_y
    keep, held = stratified_split(raw.y[pool], val_fraction, seed)
    train_index, val_index = pool[keep], pool[held]

    train_x, train_y = raw.x.index_select(0, train_index), raw.y[train_index]
    mean, std = _channel_stats(train_x)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel is left unscaled

    def split(x: Tensor, y: Tensor) -> TensorSplit:
        # copy=True: y may be the cached tensor itself (official test labels) and must stay untouched
        return TensorSplit(_normalised(x, mean, std, device), y.to(device, copy=True))

    return DatasetBundle(
        info=info,
        train=split(train_x, train_y),
        val=split(raw.x.index_select(0, val_index), raw.y[val_index]),
        test=split(test_x, test_y),
        mean=tuple(float(m) for m in mean.cpu()),
        std=tuple(float(s) for s in std.cpu()),
    )


def _keep_splits(bundle: DatasetBundle, file: Path) -> None:
    state = {f"{name}_{part}": getattr(bundle.split(name), part) for name in _SPLIT_NAMES for part in ("x", "y")}
    state.update(mean=torch.tensor(bundle.mean, dtype=torch.float64), std=torch.tensor(bundle.std, dtype=torch.float64))
    # no CRC: it would triple the time to write ~220 MB, and a kept file is never read without a memory map
    with torch_serialization_config.patch({"save.compute_crc32": False}):
        torch.save(state, file)


def _read_kept_splits(file: Path, info: DatasetInfo) -> DatasetBundle | None:
    """Kept splits, memory-mapped copy-on-write (a write to a tensor never reaches the file); None if the file
    does not hold what load_dataset returns."""
    kept = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    splits = {name: TensorSplit(kept[f"{name}_x"], kept[f"{name}_y"]) for name in _SPLIT_NAMES}
    channels = splits["train"].x.shape[1]
    if any(s.x.dim() != 4 or s.x.dtype != torch.float32 or s.y.dtype != torch.int64 or s.x.shape[1:] !=
           splits["train"].x.shape[1:] for s in splits.values()) or not len(kept["mean"]) == len(kept["std"]) == channels:
        return None
    return DatasetBundle(info=replace(info, input_shape=tuple(splits["train"].x.shape[1:])), **splits,
                         mean=tuple(float(m) for m in kept["mean"]), std=tuple(float(s) for s in kept["std"]))
