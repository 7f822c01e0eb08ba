"""What datasets exist, described without loading anything (safe to call from a form on every rerun)."""
from __future__ import annotations

from dataclasses import dataclass

from kdcore.errors import UnknownNameError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    input_shape: tuple[int, int, int]  # (C, H, W) as the model sees it
    num_classes: int  # 0 for "imagefolder" until a folder is chosen
    class_names: tuple[str, ...]
    description: str


DIGIT_NAMES = tuple(str(d) for d in range(10))

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# CIFAR-100 fine labels in their official (alphabetical) index order.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

# Every image of an image folder is resized to this (C, H, W): small enough to live on the GPU.
IMAGEFOLDER_SHAPE = (3, 32, 32)

_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", "Digits (8×8)", (1, 8, 8), 10, DIGIT_NAMES,
                    "scikit-learn's 1797 handwritten digits at 8×8; embedded, trains in seconds on a CPU."),
        DatasetInfo("fashion-mnist", "Fashion-MNIST", (1, 28, 28), 10, FASHION_MNIST_CLASSES,
                    "70,000 28×28 grey images of clothing in 10 classes (Zalando)."),
        DatasetInfo("mnist", "MNIST", (1, 28, 28), 10, DIGIT_NAMES,
                    "70,000 28×28 grey handwritten digits."),
        DatasetInfo("cifar10", "CIFAR-10", (3, 32, 32), 10, CIFAR10_CLASSES,
                    "60,000 32×32 colour images in 10 classes; the usual KD benchmark."),
        DatasetInfo("cifar100", "CIFAR-100", (3, 32, 32), 100, CIFAR100_CLASSES,
                    "60,000 32×32 colour images in 100 fine classes; where KD gains show most."),
        DatasetInfo("svhn", "SVHN", (3, 32, 32), 10, DIGIT_NAMES,
                    "Street View House Numbers: about 99,000 32×32 colour digits (train + test)."),
        DatasetInfo("imagefolder", "Image folder", IMAGEFOLDER_SHAPE, 0, (),
                    "Your own images: one subfolder per class under the data root, resized to 32×32 RGB."),
    )
}

assert len(CIFAR100_CLASSES) == 100


def canonical_name(name: str) -> str:
    """Accept small spelling variants ("Fashion_MNIST", " cifar10 ") for the registered names."""
    return str(name).strip().lower().replace("_", "-")


def list_datasets() -> list[DatasetInfo]:
    return list(_DATASETS.values())


def dataset_info(name: str) -> DatasetInfo:
    """Describe a dataset without loading or downloading it."""
    key = canonical_name(name)
    if key not in _DATASETS:
        valid = ", ".join(_DATASETS)
        raise UnknownNameError(f"Unknown dataset '{name}'; choose one of: {valid}.")
    return _DATASETS[key]
