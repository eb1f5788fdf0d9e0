"""The Minimax evaluation protocol that VLCP's paper reports: CutMix, epochs by IPC, best-over-evaluations."""

from __future__ import annotations

import json

import pytest
import torch

from distillset.augment import cutmix
from distillset.data.base import DatasetInfo, ImageSet
from distillset.evaluate.minimax import evaluate_minimax
from distillset.training.minimax import MinimaxConfig, minimax_epochs


def test_cutmix_pastes_one_box_and_reports_the_kept_fraction():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16).clone()  # image i is filled with i
    for seed in range(20):
        mixed, perm, kept = cutmix(x, torch.Generator().manual_seed(seed))
        from_other = mixed != x
        changed = perm != torch.arange(4)
        # pixels from the partner image form the same box in every image whose partner differs
        box = from_other[changed.nonzero().flatten()[0], 0] if changed.any() else None
        if box is not None:
            assert kept == pytest.approx(1.0 - box.float().mean().item())
            assert torch.equal(mixed[changed, 0][:, box], x[perm][changed, 0][:, box])
        assert torch.equal(mixed[~changed], x[~changed])
        assert 0.0 <= kept <= 1.0


def test_cutmix_lambda_follows_beta():
    # Beta(1, 1): lam uniform, so the mean cut area 1 - lam (before clipping) is about 1/2; Beta(50, 50): ~1/2 too,
    # but a tight spread; clipping only shrinks boxes, so kept >= lam-based value on average
    x = torch.zeros(2, 1, 64, 64)
    kept = [cutmix(x, torch.Generator().manual_seed(s), beta=50.0)[2] for s in range(200)]
    assert 0.5 < sum(kept) / len(kept) < 0.85
    assert max(kept) - min(kept) < 0.6


def test_minimax_epochs_follow_the_reference_table():
    assert [minimax_epochs(i, 10) for i in (1, 10, 20, 50, 100, 500, 1000)] == [3000, 2000, 1500, 1500, 1000, 500, 300]
    assert minimax_epochs(10, 100) == 1300  # 2000 * 2/3 = 1333 -> 1300
    assert minimax_epochs(50, 100) == 1000


def test_minimax_evaluation_learns_and_best_is_at_least_final():
    generator = torch.Generator().manual_seed(0)
    info = DatasetInfo("toy", 1, (8, 8), 2, (0.0,), (1.0,))

    def make(n: int) -> ImageSet:
        labels = torch.arange(n) % 2
        images = torch.randn(n, 1, 8, 8, generator=generator) * 0.3
        images[labels == 1, :, :, :4] += 1.5  # class 1: a bright left half
        return ImageSet(images, labels)

    config = MinimaxConfig(model="convnet3", epochs=30, num_models=2, evaluations=10, augment="", image_size=16)
    result = evaluate_minimax(make(20), make(200), info, config).to_dict()
    assert result["n"] == 2 and result["mean"] > 80.0
    assert all(b >= f for b, f in zip(result["accuracies"], result["final_accuracies"]))


def test_evaluate_minimax_cli_records_best_and_final(tmp_path):
    from typer.testing import CliRunner

    from distillset.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(app, ["coreset", "--dataset", "digits", "--ipc", "2", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["evaluate-minimax", str(out), "--model", "convnet3", "--models", "1", "--epochs",
                                 "4", "--evaluations", "2"])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "evaluation.json").read_text())["minimax-convnet3-e4-n1-s0"]
    assert entry["n"] == 1 and entry["accuracies"][0] >= entry["final_accuracies"][0]
