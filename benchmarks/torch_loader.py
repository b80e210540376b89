"""The PyTorch ``DataLoader`` a user would write for the benchmark JPEGs (PIL decode, numpy).

Imports only torch, numpy and PIL (no TensorFlow), so worker processes stay light. The
transform copies torchvision's ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip`` +
``Normalize``, with output laid out HWC so batches match the other loaders' shapes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

AREA = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def crop_params(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, w, h), center crop after 10 misses."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*AREA)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


class JpegFiles(torch.utils.data.Dataset):
    """(path, label) pairs to (normalized float32 [crop, crop, 3] tensor, label): random resized crop, flip."""

    def __init__(
        self,
        files: Sequence[tuple[str, int]],
        *,
        crop: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
    ) -> None:
        self.files, self.crop, self.seed = list(files), crop, seed
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = random.Random(hash((self.seed, index, torch.initial_seed())))
        path, label = self.files[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            left, top, w, h = crop_params(img.width, img.height, rng)
            img = img.resize((self.crop, self.crop), Image.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = np.asarray(img, dtype=np.float32)
        return torch.from_numpy((pixels / 255.0 - self.mean) / self.std), label


def loader(
    files: Sequence[tuple[str, int]],
    *,
    batch: int,
    workers: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.utils.data.DataLoader:
    """A shuffled training DataLoader with ``workers`` processes kept across epochs."""
    data = JpegFiles(files, crop=crop, mean=mean, std=std)
    return torch.utils.data.DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
    )


def forever(dl: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches over endless epochs (a new shuffle each epoch, same workers)."""
    while True:
        yield from dl
