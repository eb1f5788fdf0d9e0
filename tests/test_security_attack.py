"""Dark Distillation (triggers, gradient distance, the attack) and the backdoor scan."""

import pytest
import torch
from typer.testing import CliRunner

from distillset.artifacts import load_run, save_run
from distillset.cli import app
from distillset.coreset import select_coreset
from distillset.data.base import ImageSet
from distillset.security.dark_distillation import DarkDistillationConfig, dark_distillation, gradient_distance
from distillset.security.scan import calibrated_threshold, high_frequency_ratio, scan_set
from distillset.security.triggers import TriggerSpec

TINY = dict(width=8, proxy_steps=5, inversion_steps=5, trajectory_points=1, match_steps=6)


def test_patch_trigger_sets_the_bottom_right_square(digits):
    x = torch.zeros(2, 1, 8, 8)
    stamped = TriggerSpec(kind="patch", size=2, value=10.0).build(digits.info).apply(x)
    assert stamped[:, :, 6:, 6:].eq(10.0).all() and stamped[:, :, :6].eq(0).all() and stamped[:, :, :, :6].eq(0).all()
    assert x.eq(0).all()  # the input is not modified


def test_blended_trigger_is_a_blend_in_pixel_space(digits):
    info = digits.info
    trigger = TriggerSpec(kind="blended", blend_ratio=0.25, pattern_seed=3).build(info)
    pixels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pattern = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    expected = 0.75 * pixels + 0.25 * pattern
    assert torch.allclose(info.denormalize(trigger.apply(info.normalize(pixels))), expected, atol=1e-5)


def test_trigger_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown trigger"):
        TriggerSpec(kind="wanet")
    with pytest.raises(ValueError, match="blend ratio"):
        TriggerSpec(kind="blended", blend_ratio=0.0)


def test_gradient_distance_hand_values():
    a = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    assert gradient_distance(a, [torch.tensor([0.0, 1.0]), torch.tensor([[0.0]])]).item() == pytest.approx(1.0)
    # cos(a, b) with a = (3, 0, 4), b = (3, 0, 0): 9 / (5 * 3)
    assert gradient_distance(a, [torch.tensor([3.0, 0.0]), torch.tensor([[0.0]])]).item() == pytest.approx(0.4)
    assert gradient_distance(a, [-t for t in a]).item() == pytest.approx(2.0, abs=1e-6)
    assert gradient_distance(a, [torch.zeros(2), torch.zeros(1, 1)], "mse").item() == pytest.approx(25.0)


def test_high_frequency_ratio_hand_values():
    # a horizontal ramp has zero Laplacian; a checkerboard of +-1 has Laplacian +-8 inside and variance 1
    ramp = torch.arange(5.0).repeat(5, 1)[None, None]
    checker = ((torch.arange(5)[:, None] + torch.arange(5)[None, :]) % 2 * 2.0 - 1)[None, None]
    ratio = high_frequency_ratio(torch.cat([ramp, checker, torch.ones(1, 1, 5, 5)]))
    assert ratio[0].item() == 0.0 and ratio[2].item() == 0.0
    variance = checker.var(unbiased=False).item()  # 12 of 25 pixels are -1, mean -1/25
    assert ratio[1].item() == pytest.approx(64.0 / variance)
    noise = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert high_frequency_ratio(noise).mean().item() == pytest.approx(20.0, rel=0.05)  # 16 + 4 neighbours


@pytest.fixture(scope="module")
def tiny_attack(digits):
    synthetic = select_coreset(digits, "random", 2, seed=0)
    config = DarkDistillationConfig(target=3, **TINY)
    return synthetic, dark_distillation(synthetic, digits.info, config)


def test_attack_keeps_labels_and_size_and_moves_toward_the_backdoor(tiny_attack):
    synthetic, result = tiny_attack
    assert result.poisoned.images.shape == synthetic.images.shape
    assert torch.equal(result.poisoned.labels, synthetic.labels)
    assert not torch.equal(result.poisoned.images, synthetic.images)
    assert result.backdoor.labels.eq(3).all() and len(result.backdoor) == 10
    assert result.backdoor.images[:, :, -1, -1].eq(10.0).all()
    for record in result.losses:  # each trajectory point's image updates lower the hybrid loss's backdoor term
        assert record["backdoor"] < record["backdoor_first"]
    assert result.seconds > 0


def test_attack_is_reproducible(digits, tiny_attack):
    synthetic, result = tiny_attack
    again = dark_distillation(synthetic, digits.info, DarkDistillationConfig(target=3, **TINY))
    assert torch.equal(again.poisoned.images, result.poisoned.images)


def test_attack_rejects_bad_inputs(digits, tiny_attack):
    synthetic, _ = tiny_attack
    with pytest.raises(ValueError, match="target class 10 out of range"):
        dark_distillation(synthetic, digits.info, DarkDistillationConfig(target=10, **TINY))
    with pytest.raises(ValueError, match="alpha"):
        DarkDistillationConfig(alpha=1.5)


def test_scan_flags_a_noised_set_and_passes_the_clean_one(digits):
    clean = select_coreset(digits, "random", 10, seed=1)
    threshold = 1.25 * max(scan_set(select_coreset(digits, "random", 10, seed=s), 0.0).score for s in (2, 3, 4))
    assert not scan_set(clean, threshold).flagged  # calibrated on other clean draws
    noisy = ImageSet(clean.images + 1.0 * torch.randn(clean.images.shape, generator=torch.Generator().manual_seed(0)),
                     clean.labels)
    result = scan_set(noisy, threshold)
    assert result.flagged and len(result.per_class) == 10
    with pytest.raises(ValueError, match="at least 3x3"):
        scan_set(ImageSet(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])), 1.0)
    with pytest.raises(ValueError, match="no calibrated scan threshold for dataset 'digits'"):
        calibrated_threshold("digits")


def test_cli_attack_dark_writes_a_marked_run_and_scan_reports(tmp_path, digits):
    run, out = tmp_path / "run", tmp_path / "poisoned"
    save_run(run, select_coreset(digits, "random", 2, seed=0), method="random", dataset="digits", ipc=2, seed=0,
             config={}, wall_seconds=0.0)
    result = CliRunner().invoke(app, ["attack", "dark", str(run), "--out", str(out), "--trigger", "blended",
                                      "--target", "1", "--trajectory-points", "0", "--match-steps", "2",
                                      "--width", "8"])
    assert result.exit_code == 0, result.output
    poisoned, manifest = load_run(out)
    assert manifest["kind"] == "poisoned" and manifest["attack"]["target"] == 1
    assert manifest["attack"]["trigger"]["kind"] == "blended" and len(poisoned) == 20
    bad = CliRunner().invoke(app, ["attack", "dark", str(run), "--out", str(tmp_path / "x"), "--trigger", "wanet"])
    assert bad.exit_code == 2 and "unknown trigger" in bad.output
    report = tmp_path / "scan.json"
    result = CliRunner().invoke(app, ["scan", str(run)])
    assert result.exit_code == 2 and "no calibrated scan threshold" in result.output
    result = CliRunner().invoke(app, ["scan", str(run), "--threshold", "100", "--out", str(report)])
    assert result.exit_code == 0 and "no poisoning found" in result.output and report.is_file()
    result = CliRunner().invoke(app, ["scan", str(run), "--threshold", "0.01"])
    assert result.exit_code == 3 and "FLAGGED" in result.output
