"""Dataset registry: loading, splits, normalisation, IDX, missing data, image folders, augmentation, batches."""
from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from kdcore import paths
from kdcore.data import (
    Augmentation,
    DatasetBundle,
    DatasetInfo,
    TensorSplit,
    clear_cache,
    dataset_info,
    default_augmentation,
    describe_imagefolder,
    iterate_batches,
    list_datasets,
    load_dataset,
    read_idx,
    read_raw,
    stratified_subset,
    write_idx,
)
from kdcore.data.registry import FASHION_MNIST_CLASSES
from kdcore.errors import DatasetMissingError, KDError, UnknownNameError


@pytest.fixture()
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty, isolated KD_HOME and KD_DATA_DIR, and a fresh in-process dataset cache."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("KD_HOME", str(tmp_path / "kdhome"))
    monkeypatch.setenv("KD_DATA_DIR", str(root))
    clear_cache()
    yield root
    clear_cache()


def assert_one_sentence(message: str) -> None:
    assert message and "\n" not in message
    assert message.endswith(".")
    assert ". " not in message, message  # a single sentence, not several


def write_fake_mnist(directory: Path, n_train: int, n_test: int, *, gz: bool, seed: int = 0) -> dict:
    """Four IDX files with the real MNIST names; returns the arrays that were written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(directory / (stem + (".gz" if gz else "")), array)
    return arrays


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_without_loading():
    names = [info.name for info in list_datasets()]
    assert names == ["digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "imagefolder"]
    cifar100 = dataset_info("cifar100")
    assert isinstance(cifar100, DatasetInfo)
    assert cifar100.num_classes == len(cifar100.class_names) == 100
    assert cifar100.input_shape == (3, 32, 32)
    assert dataset_info("Fashion_MNIST").name == "fashion-mnist"
    assert dataset_info("fashion-mnist").class_names[0] == "T-shirt/top"


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        dataset_info("imagenet")
    message = str(err.value)
    assert "imagenet" in message and "cifar10" in message and "digits" in message
    assert_one_sentence(message)
    with pytest.raises(UnknownNameError):
        load_dataset("imagenet")


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_splits_and_normalisation(data_root):
    bundle = load_dataset("digits", seed=0)
    assert isinstance(bundle, DatasetBundle)
    assert bundle.info.input_shape == (1, 8, 8) and bundle.info.num_classes == 10
    sizes = [len(bundle.train), len(bundle.val), len(bundle.test)]
    assert sum(sizes) == 1797
    assert 0.65 < sizes[0] / 1797 < 0.76 and 0.06 < sizes[1] / 1797 < 0.12 and 0.18 < sizes[2] / 1797 < 0.22
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.shape[0] == split.y.shape[0] == len(split)
        assert set(split.y.tolist()) == set(range(10))  # stratified: every class in every split
    assert abs(bundle.train.x.mean().item()) < 1e-4
    assert abs(bundle.train.x.std(unbiased=False).item() - 1.0) < 1e-3
    assert len(bundle.mean) == len(bundle.std) == 1
    # Values 0..16 were scaled to [0, 1]: denormalising gives back multiples of 1/16.
    pixels = bundle.denormalize(bundle.test.x) * 16
    assert pixels.min() >= 0 and pixels.max() <= 16
    assert torch.allclose(pixels, pixels.round(), atol=1e-4)


def test_digits_splits_partition_the_data(data_root):
    bundle = load_dataset("digits", seed=3)
    raw = read_raw("digits")

    def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
        levels = (x * 16).round().to(torch.int64).reshape(len(x), -1)
        return Counter(tuple(r) + (int(label),) for r, label in zip(levels.tolist(), y.tolist()))

    parts = Counter()
    for split in (bundle.train, bundle.val, bundle.test):
        parts += rows(bundle.denormalize(split.x), split.y)
    assert parts == rows(raw.x, raw.y)  # nothing lost, nothing duplicated


def test_digits_is_deterministic_and_test_split_ignores_the_seed(data_root):
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y) and a.mean == b.mean
    assert not torch.equal(a.val.x, c.val.x)  # the seed picks another validation set
    # ... but the test samples are the same for every seed (normalisation differs, pixels do not).
    assert torch.equal(a.test.y, c.test.y)
    assert torch.allclose(a.denormalize(a.test.x), c.denormalize(c.test.x), atol=1e-5)


def test_val_fraction_is_checked_and_zero_gives_an_empty_validation_split(data_root):
    with pytest.raises(KDError):
        load_dataset("digits", val_fraction=1.0)
    bundle = load_dataset("digits", val_fraction=0.0)
    assert len(bundle.val) == 0 and bundle.val.x.shape[1:] == (1, 8, 8)
    assert len(bundle.train) + len(bundle.test) == 1797


def test_split_and_bundle_helpers(data_root):
    bundle = load_dataset("digits")
    part = bundle.train.subset(torch.tensor([0, 2, 4]))
    assert len(part) == 3 and torch.equal(part.x[1], bundle.train.x[2]) and part.y[2] == bundle.train.y[4]
    by_mask = bundle.train.subset(bundle.train.y == 3)
    assert len(by_mask) == int((bundle.train.y == 3).sum()) and set(by_mask.y.tolist()) == {3}
    moved = bundle.to("cpu")
    assert moved.device == torch.device("cpu") and torch.equal(moved.test.x, bundle.test.x)
    image = bundle.test.x[0]
    assert torch.allclose(bundle.normalize(bundle.denormalize(image)), image, atol=1e-5)
    assert bundle.split("val") is bundle.val
    with pytest.raises(ValueError):
        TensorSplit(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([[1, -2, 300000], [7, 8, -9]], dtype=np.int32)
    path_images = write_idx(tmp_path / f"images{suffix}", images)
    path_ints = write_idx(tmp_path / f"ints{suffix}", ints)
    if suffix:
        assert path_images.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert path_images.read_bytes()[:4] == bytes([0, 0, 0x08, 3])
    got = read_idx(path_images)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4) and np.array_equal(got, images)
    got_ints = read_idx(path_ints)
    assert got_ints.dtype == np.int32 and np.array_equal(got_ints, ints)
    assert got.flags.writeable  # safe for torch.from_numpy


def test_read_idx_rejects_corrupt_files(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((4, 5), dtype=np.uint8)).read_bytes()
    cases = {
        "bad_magic": b"\x12\x34" + good[2:],
        "unknown_type": good[:2] + b"\x42" + good[3:],
        "truncated_data": good[:-3],
        "truncated_header": good[:6],
        "broken.gz": gzip.compress(good)[:-10],
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(KDError) as err:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), name
        assert "\n" not in str(err.value)
    with pytest.raises(KDError):
        read_idx(tmp_path / "does-not-exist")


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_the_debian_files(data_root):
    assert paths.DEBIAN_FASHION_MNIST.is_dir(), "Debian's dataset-fashion-mnist is not installed"
    bundle = load_dataset("fashion-mnist", download=False, root=data_root)
    assert bundle.info.class_names == FASHION_MNIST_CLASSES
    assert bundle.info.class_names[0] == "T-shirt/top" and bundle.info.class_names[-1] == "Ankle boot"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (54000, 6000, 10000)
    assert bundle.train.x.shape == (54000, 1, 28, 28) and bundle.train.x.dtype == torch.float32
    assert torch.bincount(bundle.val.y, minlength=10).tolist() == [600] * 10  # stratified carve-out
    assert torch.bincount(bundle.test.y, minlength=10).tolist() == [1000] * 10
    assert abs(bundle.train.x.mean().item()) < 1e-3
    assert 0.2 < bundle.mean[0] < 0.4  # Fashion-MNIST's well-known mean is about 0.286


def test_fashion_mnist_prefers_idx_files_in_the_data_dir(data_root):
    arrays = write_fake_mnist(data_root / "fashion-mnist", n_train=40, n_test=20, gz=True)
    bundle = load_dataset("fashion-mnist", download=False, val_fraction=0.25)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 20)
    expected_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    assert torch.allclose(bundle.denormalize(bundle.test.x), expected_test, atol=1e-5)
    assert "fashion-mnist" in read_raw("fashion-mnist", download=False).source


def test_decoded_idx_files_are_cached_and_decoded_again_when_a_file_changes(data_root, monkeypatch):
    from kdcore.data import sources

    arrays = write_fake_mnist(data_root / "fashion-mnist", n_train=40, n_test=20, gz=True)
    first = read_raw("fashion-mnist", download=False)
    cached = list((paths.cache_dir() / "idx").glob("*.npz"))
    assert len(cached) == 1 and paths.cache_dir().is_relative_to(Path(os.environ["KD_HOME"]))

    decoded = []
    real_read_idx = sources.read_idx
    monkeypatch.setattr(sources, "read_idx", lambda path: decoded.append(path) or real_read_idx(path))
    clear_cache()
    again = read_raw("fashion-mnist", download=False)
    assert decoded == []  # served from the cache, and identical
    for a, b in ((first.x, again.x), (first.y, again.y), (first.test_x, again.test_x), (first.test_y, again.test_y)):
        assert torch.equal(a, b)
    assert torch.equal(again.x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))

    new_test = np.full((20, 28, 28), 7, dtype=np.uint8)  # a changed file is decoded again, not served stale
    write_idx(data_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", new_test)
    clear_cache()
    assert torch.equal(read_raw("fashion-mnist", download=False).test_x[:, 0], torch.from_numpy(new_test))
    assert len(decoded) == 4

    for stale in (paths.cache_dir() / "idx").glob("*.npz"):  # a damaged cache file is decoded and rewritten
        stale.write_bytes(b"PK\x03\x04 cut short")
    clear_cache()
    assert torch.equal(read_raw("fashion-mnist", download=False).test_x[:, 0], torch.from_numpy(new_test))
    assert len(decoded) == 8


def test_split_fashion_mnist_is_kept_and_equals_a_fresh_computation_bit_for_bit(data_root, monkeypatch):
    from kdcore.data import loader
    from kdcore.data.batches import stratified_split

    write_fake_mnist(data_root / "fashion-mnist", n_train=60, n_test=20, gz=True)
    built = load_dataset("fashion-mnist", download=False, val_fraction=0.25, seed=3)
    assert len(list((paths.cache_dir() / "splits").glob("*.pt"))) == 1

    # the computation as it was before splits were kept: rows picked by tensor indexing, normalised afresh
    raw = read_raw("fashion-mnist", download=False)
    keep, held = stratified_split(raw.y, 0.25, 3)
    mean, std = loader._channel_stats(raw.x[keep])
    reference = {"train": (raw.x[keep], raw.y[keep]), "val": (raw.x[held], raw.y[held]),
                 "test": (raw.test_x, raw.test_y)}

    def unread(*args, **kwargs):
        raise AssertionError("kept splits must be served without reading the dataset")

    monkeypatch.setattr(loader, "read_raw", unread)
    clear_cache()
    kept = load_dataset("fashion-mnist", download=False, val_fraction=0.25, seed=3)
    for name, (x, y) in reference.items():
        expected = loader._normalised(x, mean, std, "cpu")
        for bundle in (built, kept):
            assert torch.equal(bundle.split(name).x, expected) and torch.equal(bundle.split(name).y, y)
    assert kept.mean == built.mean == tuple(mean.tolist()) and kept.std == built.std == tuple(std.tolist())
    assert kept.info == built.info

    kept.train.x.add_(1.0)  # copy-on-write: a run changing its tensors never changes the kept file
    assert torch.equal(load_dataset("fashion-mnist", download=False, val_fraction=0.25, seed=3).train.x,
                       built.train.x)

    monkeypatch.setattr(loader, "read_raw", read_raw)
    other = load_dataset("fashion-mnist", download=False, val_fraction=0.5, seed=3)  # other arguments: other splits
    assert len(other.val) == 30 and len(list((paths.cache_dir() / "splits").glob("*.pt"))) == 2

    new_test = np.full((20, 28, 28), 7, dtype=np.uint8)  # a changed file is split again, not served stale
    write_idx(data_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", new_test)
    clear_cache()
    changed = load_dataset("fashion-mnist", download=False, val_fraction=0.25, seed=3)
    assert torch.allclose(changed.denormalize(changed.test.x)[:, 0], torch.from_numpy(new_test) / 255.0, atol=1e-6)

    for kept_file in (paths.cache_dir() / "splits").glob("*.pt"):  # a damaged kept file is built and written again
        kept_file.write_bytes(b"PK\x03\x04 cut short")
    clear_cache()
    assert torch.equal(load_dataset("fashion-mnist", download=False, val_fraction=0.25, seed=3).test.x, changed.test.x)


def test_splits_that_cannot_be_kept_are_used_all_the_same_and_leave_no_partial_file(data_root, monkeypatch):
    from kdcore.data import loader

    write_fake_mnist(data_root / "fashion-mnist", n_train=40, n_test=20, gz=False)

    def full_disk(state, file):  # torch.save's writer reports a failed write as a RuntimeError
        Path(file).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    real_save = torch.save
    monkeypatch.setattr(loader.torch, "save", full_disk)
    bundle = load_dataset("fashion-mnist", download=False, val_fraction=0.25)
    assert len(bundle.train) == 30 and bundle.key is not None
    assert list((paths.cache_dir() / "splits").iterdir()) == []
    monkeypatch.setattr(loader.torch, "save", real_save)
    clear_cache()
    assert torch.equal(load_dataset("fashion-mnist", download=False, val_fraction=0.25).train.x, bundle.train.x)


def test_fashion_mnist_missing_everywhere(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("fashion-mnist", download=False)
    message = str(err.value)
    assert_one_sentence(message)
    assert "dataset-fashion-mnist" in message and "KD_DATA_DIR" in message and str(data_root) in message


# ----------------------------------------------------------------------------- torchvision datasets


def test_mnist_through_torchvision_from_local_raw_files(data_root):
    arrays = write_fake_mnist(data_root / "MNIST" / "raw", n_train=50, n_test=20, gz=False)
    bundle = load_dataset("mnist", download=False, val_fraction=0.2, seed=5)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 20)
    assert bundle.test.x.shape == (20, 1, 28, 28)
    assert bundle.test.y.tolist() == (np.arange(20) % 10).tolist()
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    assert torch.allclose(bundle.denormalize(bundle.test.x), expected, atol=1e-5)
    # Converted once: the second load reuses the cached CPU tensors.
    assert read_raw("mnist", download=False) is read_raw("mnist", download=False)


def test_missing_cifar10_without_download(data_root):
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("cifar10", download=False, root=data_root)
    assert_one_sentence(str(err.value))
    assert str(data_root) in str(err.value) and "cifar-10-batches-py" in str(err.value)


def test_failed_download_is_one_sentence(data_root, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def offline(self):
        calls.append(self.root)
        raise URLError("[Errno -2] Name or service not known.\nSecond line")

    monkeypatch.setattr(tvd.CIFAR100, "download", offline)
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("cifar100", download=True)
    assert calls, "the download was not attempted"
    assert_one_sentence(str(err.value))
    assert "download failed" in str(err.value)


# ----------------------------------------------------------------------------- image folders


def make_image_folder(base: Path, classes=("cat", "dog", "fox"), per_class=5) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, cls in enumerate(classes):
        (base / cls).mkdir(parents=True)
        for i in range(per_class):
            size = (10 + i, 12)
            if i == 0:  # grey and RGBA files must come out RGB too
                img = Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode="L")
            elif i == 1:
                img = Image.fromarray(rng.integers(0, 256, (*size, 4), dtype=np.uint8), mode="RGBA")
            else:
                img = Image.fromarray(np.full((*size, 3), 40 * k + i, dtype=np.uint8), mode="RGB")
            img.save(base / cls / f"{i}.png")
    (base / classes[0] / "notes.txt").write_text("not an image")  # skipped: not an image extension
    return base


def test_imagefolder_loads_classes_from_subfolders(data_root):
    make_image_folder(data_root / "pets")
    bundle = load_dataset("imagefolder", path="pets", seed=0)
    assert bundle.info.class_names == ("cat", "dog", "fox") and bundle.info.num_classes == 3
    assert bundle.info.input_shape == (3, 32, 32)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 15
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.shape[1:] == (3, 32, 32)
        assert torch.bincount(split.y, minlength=3).min() >= 1  # every class in every split
    assert len(bundle.mean) == 3
    assert describe_imagefolder("pets").class_names == ("cat", "dog", "fox")
    # An absolute path that stays inside the data root is fine.
    same = load_dataset("imagefolder", path=str(data_root / "pets"))
    assert same.info.class_names == bundle.info.class_names


def test_imagefolder_refuses_paths_outside_the_data_root(data_root, tmp_path):
    outside = make_image_folder(tmp_path / "outside")
    (data_root / "inside").mkdir()
    os.symlink(outside, data_root / "link-out")
    for bad in ("../outside", str(outside), "link-out", "inside/../../outside"):
        with pytest.raises(KDError) as err:
            load_dataset("imagefolder", path=bad)
        assert "outside the data root" in str(err.value), bad
        assert_one_sentence(str(err.value))
    # A class folder inside the root that links out is refused too.
    make_image_folder(data_root / "mixed", classes=("a", "b"))
    os.symlink(outside / "dog", data_root / "mixed" / "c")
    with pytest.raises(KDError, match="outside the data root"):
        load_dataset("imagefolder", path="mixed")
    with pytest.raises(KDError):
        load_dataset("imagefolder")  # no path at all


def test_imagefolder_missing_and_broken(data_root):
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("imagefolder", path="nothing-here")
    assert_one_sentence(str(err.value))
    make_image_folder(data_root / "broken", classes=("a", "b"), per_class=3)
    (data_root / "broken" / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(KDError, match="bad.png"):
        load_dataset("imagefolder", path="broken")


# ----------------------------------------------------------------------------- augmentation


def test_augmentation_off_is_identity_and_defaults_per_dataset():
    x = torch.randn(4, 3, 8, 8)
    assert not Augmentation() and Augmentation()(x) is x
    assert Augmentation(crop_padding=1) and Augmentation(hflip=True)
    assert default_augmentation("cifar10") == Augmentation(crop_padding=4, hflip=True)
    assert default_augmentation("cifar100") == Augmentation(crop_padding=4, hflip=True)
    assert default_augmentation("svhn") == Augmentation(crop_padding=4, hflip=False)
    assert default_augmentation("mnist") == Augmentation(crop_padding=2, hflip=False)
    assert default_augmentation("fashion-mnist") == Augmentation(crop_padding=2, hflip=True)
    assert default_augmentation("digits") == Augmentation(crop_padding=1, hflip=False)
    assert default_augmentation("imagefolder") == Augmentation(crop_padding=4, hflip=True)
    with pytest.raises(UnknownNameError):
        default_augmentation("nope")


def test_augmentation_keeps_shapes_changes_inputs_and_is_seeded():
    x = torch.randn(64, 3, 8, 8)
    aug = Augmentation(crop_padding=2, hflip=True)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_random_crop_takes_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(16 * 2 * 5 * 5, dtype=torch.float32).reshape(16, 2, 5, 5) + 1  # no zeros in x
    out = Augmentation(crop_padding=2)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for n in range(len(x)):
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5)
            if torch.equal(out[n], padded[n, :, dy:dy + 5, dx:dx + 5])
        ]
        assert len(matches) == 1, f"sample {n} is not one window of the padded image"
        shifts.add(matches[0])
    assert len(shifts) > 3  # samples get different offsets


def test_flip_mirrors_left_right():
    x = torch.randn(64, 1, 4, 6)
    out = Augmentation(hflip=True)(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54  # about half mirrored
    assert torch.equal(out[flipped.index(True)][0, :, 0], x[flipped.index(True)][0, :, -1])


# ----------------------------------------------------------------------------- batches


def test_iterate_batches_covers_every_index_once():
    split = TensorSplit(torch.arange(23, dtype=torch.float32).view(23, 1, 1, 1), torch.arange(23) % 4)
    seen = []
    for x, y, index in iterate_batches(split, 5, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(x, split.x[index]) and torch.equal(y, split.y[index])
        assert len(index) <= 5
        seen += index.tolist()
    assert sorted(seen) == list(range(23)) and seen != list(range(23))
    order = lambda s: [i for _, _, idx in iterate_batches(  # noqa: E731
        split, 5, shuffle=True, generator=torch.Generator().manual_seed(s)) for i in idx.tolist()]
    assert order(3) == order(3) and order(3) != order(4)
    sequential = [idx.tolist() for _, _, idx in iterate_batches(split, 10, shuffle=False)]
    assert sequential == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    dropped = list(iterate_batches(split, 10, shuffle=True, drop_last=True))
    assert [len(b[2]) for b in dropped] == [10, 10]


def test_stratified_subset_is_balanced_and_deterministic():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    picked = stratified_subset(y, per_class=10, seed=1)
    assert torch.bincount(y[picked]).tolist() == [10, 10, 5]  # a small class gives all it has
    assert torch.equal(picked, stratified_subset(y, per_class=10, seed=1))
    assert not torch.equal(picked, stratified_subset(y, per_class=10, seed=2))
    assert len(set(picked.tolist())) == len(picked)
    half = stratified_subset(y, fraction=0.5, seed=0)
    assert torch.bincount(y[half]).tolist() == [25, 15, 2]
    with pytest.raises(ValueError):
        stratified_subset(y)
    with pytest.raises(ValueError):
        stratified_subset(y, per_class=3, fraction=0.5)


def test_the_shipped_digits_equal_scikit_learns():
    from sklearn.datasets import load_digits

    from kdcore.data import sources

    raw = sources.read_digits()
    digits = load_digits()
    assert torch.equal(raw.x, torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1))
    assert torch.equal(raw.y, torch.from_numpy(digits.target.astype(np.int64)))
