"""Dataset registry: small datasets held as normalised tensors on the device (no DataLoader workers).

    bundle = load_dataset("digits", device="cuda")
    for x, y, index in iterate_batches(bundle.train, 128, shuffle=True, generator=g):
        x = default_augmentation("digits")(x, g)
"""
from kdcore.data.augment import Augmentation, default_augmentation
from kdcore.data.batches import iterate_batches, num_batches, stratified_split, stratified_subset
from kdcore.data.bundle import DatasetBundle, TensorSplit
from kdcore.data.idx import read_idx, write_idx
from kdcore.data.loader import clear_cache, describe_imagefolder, load_dataset, read_raw
from kdcore.data.registry import DatasetInfo, dataset_info, list_datasets

__all__ = [
    "Augmentation",
    "DatasetBundle",
    "DatasetInfo",
    "TensorSplit",
    "clear_cache",
    "dataset_info",
    "default_augmentation",
    "describe_imagefolder",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "num_batches",
    "read_idx",
    "read_raw",
    "stratified_split",
    "stratified_subset",
    "write_idx",
]
