"""The data: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Digits:
    """Standardized float32 features and int64 labels, split once with a fixed seed."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load(test_fraction: float = 0.2, seed: int = 0) -> Digits:
    """Loads ``sklearn.datasets.load_digits`` and splits it into train and test sets.

    The split is stratified and seeded, so every call gives the same tensors. Features are
    standardized with the training set's mean and standard deviation (pixels that are constant in
    the training set keep a scale of 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0

    def features(a):
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)

    def labels(a):
        return torch.as_tensor(a, dtype=torch.int64)

    return Digits(features(x_tr), labels(y_tr), features(x_te), labels(y_te))
