import math

import pytest
import torch

from distillset.coreset import select_coreset
from distillset.data.base import ImageSet
from distillset.evaluate import EvalConfig, EvalResult, ModelResult
from distillset.evaluate.metrics import (
    FairMetrics,
    fair_metrics,
    full_data_accuracy,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    random_real_subset,
)

E = math.e


def test_ior_and_hlr_are_accuracy_differences():
    assert improvement_over_random(48.5, 40.0) == pytest.approx(8.5)
    assert hard_label_recovery(93.0, 48.5) == pytest.approx(44.5)


@pytest.mark.parametrize(
    ("ior", "hlr", "weight", "expected"),
    [
        (0.0, 0.0, 0.5, 100 * (1 - math.exp(-1)) / (E - math.exp(-1))),  # 26.894
        (100.0, 0.0, 1.0, 100.0),  # a = 1: the top of the range
        (0.0, 100.0, 0.0, 0.0),  # a = -1: the bottom
        (20.0, 30.0, 0.5, 100 * (math.exp(-0.05) - math.exp(-1)) / (E - math.exp(-1))),  # a = (10 - 15) / 100
    ],
)
def test_label_robust_score_by_hand(ior, hlr, weight, expected):
    assert label_robust_score(ior, hlr, weight) == pytest.approx(expected, abs=1e-9)


def test_label_robust_score_reference_values():
    assert label_robust_score(0.0, 0.0) == pytest.approx(26.894142, abs=1e-6)
    assert label_robust_score(20.0, 30.0) == pytest.approx(24.819, abs=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_robust_score(1.0, 1.0, weight=1.5)


def test_fair_metrics_summary_by_hand():
    metrics = FairMetrics(synthetic=[50.0, 54.0], synthetic_hard=[50.0, 54.0], random=[40.0, 40.0],
                          full_data_accuracy=90.0, full_data_source="given")
    assert metrics.ior == [10.0, 14.0] and metrics.hlr == [40.0, 36.0]
    summary = metrics.to_dict()
    assert summary["ior_mean"] == pytest.approx(12.0) and summary["ior_std"] == pytest.approx(2.0)  # population std
    assert summary["hlr_mean"] == pytest.approx(38.0) and summary["accuracy_reported"] == "final_epoch"
    expected_lrs = [label_robust_score(10.0, 40.0), label_robust_score(14.0, 36.0)]
    assert summary["lrs"] == pytest.approx(expected_lrs)
    assert summary["lrs_mean"] == pytest.approx(sum(expected_lrs) / 2)
    with pytest.raises(ValueError, match="same positive number of rounds"):
        FairMetrics([1.0], [1.0, 2.0], [1.0], 90.0, "given")


def test_random_subset_is_class_balanced_real_and_fresh_per_seed(digits):
    synthetic = ImageSet(torch.zeros(30, 1, 8, 8), torch.arange(10).repeat_interleave(3))
    a = random_real_subset(digits, synthetic, seed=0)
    b = random_real_subset(digits, synthetic, seed=1)
    assert a.class_counts(10).tolist() == [3] * 10 and len(a) == 30
    rows = digits.train.images.flatten(1)
    assert all(bool((rows == image.flatten()).all(dim=1).any()) for image in a.images[:5])  # real training images
    assert not torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="class-balanced"):
        random_real_subset(digits, ImageSet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 0, 1])), seed=0)


def _stub_evaluator(calls, hard_copy_base=None):
    """Model i scores 60 + i on the (all-zero) synthetic set, hard_copy_base + i on its hard-labelled copy
    (if the set is soft-labelled) and 40 + round on the random subset of a round."""

    def evaluate(images: ImageSet, config: EvalConfig) -> EvalResult:
        calls.append((images.soft_labels is not None, config.num_models, config.seed))
        synthetic = bool(images.images.abs().sum() == 0)
        hard_copy = synthetic and hard_copy_base is not None and images.soft_labels is None
        result = EvalResult(config={})
        for i in range(config.num_models):
            base = (hard_copy_base if hard_copy else 60.0) if synthetic else 40.0 + config.seed % 1000
            result.models.append(ModelResult(base + i, [base + i] * 10, 0.0))
        return result

    return evaluate


def test_fair_metrics_rounds_pair_up_with_fresh_random_subsets(digits):
    synthetic = ImageSet(torch.zeros(20, 1, 8, 8), torch.arange(10).repeat_interleave(2))
    calls: list = []
    metrics = fair_metrics(synthetic, digits, EvalConfig(num_models=3, seed=2), evaluate=_stub_evaluator(calls),
                           full_accuracy=90.0)
    assert metrics.synthetic == [60.0, 61.0, 62.0] and metrics.synthetic_hard == metrics.synthetic
    assert metrics.random == [40.0, 41.0, 42.0]  # one fresh subset per round, seeds 2000, 2001, 2002
    assert [c[1:] for c in calls[1:]] == [(1, 2000), (1, 2001), (1, 2002)]
    assert metrics.ior == [20.0, 20.0, 20.0] and metrics.hlr == [30.0, 29.0, 28.0]
    assert metrics.full_data_source == "given" and metrics.ior_labels == "hard"


def test_soft_labelled_sets_need_a_labeller_and_get_a_hard_label_run(digits):
    soft = torch.softmax(torch.randn(20, 10), dim=1)
    synthetic = ImageSet(torch.zeros(20, 1, 8, 8), torch.arange(10).repeat_interleave(2), soft)
    with pytest.raises(ValueError, match="random_labeler"):
        fair_metrics(synthetic, digits, EvalConfig(num_models=1), evaluate=_stub_evaluator([]), full_accuracy=90.0)
    calls: list = []
    metrics = fair_metrics(synthetic, digits, EvalConfig(num_models=2), evaluate=_stub_evaluator(calls, 45.0),
                           full_accuracy=90.0, random_labeler=lambda s: torch.full((len(s), 10), 0.1))
    assert all(c[0] for c in calls[1:3])  # random subsets were soft-labelled
    assert metrics.synthetic == [60.0, 61.0] and metrics.synthetic_hard == [45.0, 46.0]
    assert metrics.hlr == [45.0, 44.0] and metrics.ior_labels.startswith("soft")


def test_fair_metrics_end_to_end_with_the_protocol(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    synthetic = select_coreset(digits, "random", 2, seed=7)
    config = EvalConfig(model="convnet3", epochs=1, num_models=2)
    metrics = fair_metrics(synthetic, digits, config, full_data_epochs=1)
    full = full_data_accuracy(digits, "convnet3", epochs=1)  # cached network: same number again
    assert metrics.full_data_accuracy == pytest.approx(full) and 10.0 < full <= 100.0
    assert metrics.ior == pytest.approx([s - r for s, r in zip(metrics.synthetic, metrics.random)])
    assert len(list((tmp_path / "feature-nets").glob("*.safetensors"))) == 1
