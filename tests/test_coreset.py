import pytest
import torch

from distillset.coreset import SELECTION_RULES, select_per_class
from distillset.registry import UnknownNameError

G = torch.Generator().manual_seed(0)


def test_herding_matches_running_mean_by_hand():
    features = torch.tensor([[1.0], [2.1], [3.0], [3.9]])  # class mean 2.5
    # t=0: nearest 2.5 is 2.1 (0.4 < 0.5); t=1: target 2*2.5-2.1 = 2.9 -> 3.0;
    # t=2: target 3*2.5-5.1 = 2.4 -> 1.0 (distance 1.4) beats 3.9 (1.5)
    picked = SELECTION_RULES.get("herding")(features, 3, G)
    assert picked.tolist() == [1, 2, 0]


def test_herding_is_argmin_not_deepcore_argmax():
    features = torch.tensor([[0.0], [10.0], [4.9], [5.1]])
    first = SELECTION_RULES.get("herding")(features, 1, G)
    assert first.tolist() in ([2], [3])  # nearest the mean 5.0, never the outlier


def test_kcenter_is_farthest_first_from_the_mean():
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 7.0], [0.4, 0.3]])
    picked = SELECTION_RULES.get("kcenter")(features, 3, G)
    # mean = (2.28, 1.46): nearest is [1,0] (index 1); farthest from it: [10,0] (9.0) vs [0,7] (7.07) -> 2;
    # then min distances: [0,7] -> min(7.07, 12.2) = 7.07 largest -> 3
    assert picked.tolist() == [1, 2, 3]


def test_select_per_class_counts_and_membership():
    labels = torch.arange(3).repeat_interleave(20)
    features = torch.randn(60, 5, generator=torch.Generator().manual_seed(1))
    for method in ("random", "herding", "kcenter", "kcenter-random"):
        idx = select_per_class(method, features, labels, 3, 4, seed=0)
        assert len(idx) == 12 and len(set(idx.tolist())) == 12
        assert torch.equal(labels[idx], torch.arange(3).repeat_interleave(4))


def test_random_selection_is_seeded():
    labels = torch.arange(2).repeat_interleave(50)
    features = torch.zeros(100, 1)
    a = select_per_class("random", features, labels, 2, 5, seed=7)
    b = select_per_class("random", features, labels, 2, 5, seed=7)
    c = select_per_class("random", features, labels, 2, 5, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_input_errors():
    labels = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="fewer than ipc"):
        select_per_class("random", torch.zeros(3, 1), labels, 2, 2)
    with pytest.raises(UnknownNameError, match="choose one of"):
        select_per_class("nope", torch.zeros(3, 1), labels, 2, 1)
    with pytest.raises(ValueError, match="ipc must be"):
        select_per_class("random", torch.zeros(3, 1), labels, 2, 0)


def test_too_small_a_class_fails_before_the_feature_network_trains(monkeypatch):
    import distillset.coreset as coreset
    from distillset.data import load_dataset

    def no_training(*args, **kwargs):
        raise AssertionError("the feature network was trained before the class sizes were checked")

    monkeypatch.setattr(coreset, "trained_feature_network", no_training)
    splits = load_dataset("digits-lt", imbalance=0.01)  # the tail class keeps 1 or 2 images
    with pytest.raises(ValueError, match="fewer than ipc=5: .* lower the ipc"):
        coreset.select_coreset(splits, "herding", 5)
