"""Fixtures shared by several test files."""

import os

import pytest

from distillset.coreset import select_coreset
from distillset.data import load_dataset

# The suite runs fp32 and eager unless told otherwise: exact comparisons stay exact and no test pays for
# compilation. tests/test_runtime.py checks the fast defaults themselves (bf16 detection, compile fallback).
os.environ.setdefault("DISTILLSET_PRECISION", "fp32")
os.environ.setdefault("DISTILLSET_COMPILE", "0")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (embedded with scikit-learn: no download)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def small_set(digits):
    """A random real subset of the digits: 2 images per class."""
    return select_coreset(digits, "random", 2, seed=0)
