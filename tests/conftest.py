"""Fixtures shared by several test files."""

import pytest

from distillset.coreset import select_coreset
from distillset.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (embedded with scikit-learn: no download)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def small_set(digits):
    """A random real subset of the digits: 2 images per class."""
    return select_coreset(digits, "random", 2, seed=0)
