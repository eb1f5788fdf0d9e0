"""A real effect on a tiny task: DM beats a random real subset of the same size (scikit-learn digits)."""

import pytest

from distillset.coreset import select_coreset
from distillset.data import load_dataset
from distillset.engine import Distiller, config_for_method
from distillset.evaluate import EvalConfig, evaluate_synthetic


@pytest.mark.slow
def test_dm_beats_random_at_equal_size_on_digits():
    splits = load_dataset("digits")
    random_subset = select_coreset(splits, "random", 1, seed=0)
    config = config_for_method("dm", ipc=1, iterations=100, batch_real=128, seed=0)
    distilled = Distiller(splits.train, splits.info, config).run()
    protocol = EvalConfig(epochs=100, num_models=3, seed=0)
    random_acc = evaluate_synthetic(random_subset, splits.test, splits.info, protocol).mean
    dm_acc = evaluate_synthetic(distilled, splits.test, splits.info, protocol).mean
    assert dm_acc > random_acc + 3.0, (dm_acc, random_acc)
