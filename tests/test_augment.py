"""DSA: per-op formulas on hand-made tensors, replay, siamese sharing, gradients, RNG hygiene."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from distillset.augment import DSA, OP_GROUPS, DSAParams

GROUPS = list(OP_GROUPS)


def only(op: str, variates: list[list[float]], dsa: DSA | None = None, x: Tensor | None = None) -> Tensor:
    """Apply the single op ``op`` with the given U[0, 1) variates (one row per image, or one shared)."""
    params = DSAParams(ops=(op,), variates={op: torch.tensor(variates)}, siamese=len(variates) == 1)
    return (dsa or DSA()).apply(x, params)


def test_brightness_adds_u_minus_half() -> None:
    x = torch.zeros(2, 3, 2, 2)
    out = only("brightness", [[0.75], [0.1]], x=x)
    torch.testing.assert_close(out[0], torch.full((3, 2, 2), 0.25))
    torch.testing.assert_close(out[1], torch.full((3, 2, 2), -0.4))


def test_saturation_scales_deviation_from_channel_mean_by_2u() -> None:
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)  # channel mean 2
    out = only("saturation", [[0.25]], x=x)  # factor 2 * 0.25 = 0.5
    torch.testing.assert_close(out.flatten(), torch.tensor([1.5, 2.0, 2.5]))


def test_contrast_scales_deviation_from_image_mean_by_u_plus_half() -> None:
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)  # image mean 3
    out = only("contrast", [[0.0]], x=x)  # factor 0.5
    torch.testing.assert_close(out.flatten(), torch.tensor([1.5, 2.5, 3.5, 4.5]))


def test_flip_mirrors_columns_when_u_below_half() -> None:
    x = torch.arange(6.0).view(1, 1, 2, 3).repeat(2, 1, 1, 1)
    out = only("flip", [[0.25], [0.75]], x=x)
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]))
    torch.testing.assert_close(out[1], x[1])


def test_crop_shifts_by_whole_pixels_with_zero_fill() -> None:
    # 8 px -> max shift int(8 * 0.125 + 0.5) = 1, shifts {-1, 0, 1} <- u in thirds.
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8)
    out = only("crop", [[5 / 6, 1 / 6]], x=x)  # row shift +1, column shift -1
    expected = torch.zeros(8, 8)
    expected[:7, 1:] = x[0, 0, 1:, :7]  # out[i, j] = x[i + 1, j - 1]
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(only("crop", [[0.5, 0.5]], x=x), x)


def test_crop_range_is_plus_minus_four_pixels_at_32px() -> None:
    x = torch.ones(1, 1, 32, 32)
    zero_rows = [int((only("crop", [[u, 0.5]], x=x)[0, 0, :, 0] == 0).sum()) for u in (0.0, 0.999)]
    assert zero_rows == [4, 4]


def test_cutout_zeroes_a_half_side_square_clipped_at_the_border() -> None:
    # 4 px -> side int(4 * 0.5 + 0.5) = 2; centre uniform on {0..4} (u in fifths); rows [c - 1, c + 1).
    x = torch.ones(1, 2, 4, 4)
    out = only("cutout", [[0.5, 0.9]], x=x)  # centre row 2 -> rows 1, 2; centre column 4 -> column 3 only
    expected = torch.ones(4, 4)
    expected[1:3, 3] = 0
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], expected)
    assert int((only("cutout", [[0.5, 0.5]], x=torch.ones(1, 1, 32, 32)) == 0).sum()) == 16 * 16


def test_scale_one_and_rotate_zero_are_the_identity() -> None:
    x = torch.randn(2, 3, 9, 9)
    dsa = DSA()
    u_one = (1 - 1 / 1.2) / (1.2 - 1 / 1.2)  # maps to scale factor 1
    torch.testing.assert_close(only("scale", [[u_one, u_one]], dsa, x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(only("rotate", [[0.5]], dsa, x), x, atol=1e-5, rtol=0)


def test_scale_samples_the_stretched_grid_bilinearly() -> None:
    # scale_ratio 2, u = 1 -> sx = 2; u = 1/3 -> sy = 1. Column j samples input column 2 * (j - 1.5) + 1.5.
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4).repeat(1, 1, 3, 1)
    out = only("scale", [[1.0, 1 / 3]], DSA(scale_ratio=2.0), x)
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([0.0, 0.5, 2.5, 0.0]))


def test_rotate_by_the_full_angle_turns_the_image_anticlockwise() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = only("rotate", [[1.0]], DSA(rotate_degrees=90.0), x)  # angle (1 - 0.5) * 2 * 90 = 90 degrees
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("group", GROUPS)
def test_replaying_params_gives_identical_outputs(group: str) -> None:
    dsa = DSA(strategy=group)
    x = torch.randn(5, 3, 16, 16)
    params = dsa.sample(5, torch.Generator().manual_seed(0), siamese=False)
    assert torch.equal(dsa.apply(x, params), dsa.apply(x, params))


@pytest.mark.parametrize("group", GROUPS)
def test_siamese_params_transform_batches_of_any_size_identically(group: str) -> None:
    dsa = DSA(strategy=group)
    real, synthetic = torch.randn(9, 3, 16, 16), torch.randn(2, 3, 16, 16)
    params = dsa.sample(1, torch.Generator().manual_seed(3), siamese=True)
    joint = dsa.apply(torch.cat([real, synthetic]), params)
    torch.testing.assert_close(dsa.apply(real, params), joint[:9])
    torch.testing.assert_close(dsa.apply(synthetic, params), joint[9:])


@pytest.mark.parametrize("group", GROUPS)
def test_gradients_reach_the_input(group: str) -> None:
    dsa = DSA(strategy=group)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    weights = torch.randn(4, 3, 16, 16)
    (dsa(x, torch.Generator().manual_seed(1)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["S", "M"])
def test_batch_of_one_works(mode: str) -> None:
    dsa = DSA(mode=mode, seed=0)
    for _ in range(12):
        assert dsa(torch.randn(1, 3, 8, 8)).shape == (1, 3, 8, 8)
        assert dsa(torch.randn(1, 1, 8, 8), siamese=True).shape == (1, 1, 8, 8)


def test_global_rng_is_untouched() -> None:
    state = torch.random.get_rng_state()
    dsa = DSA()  # seeds its own generator non-deterministically
    x = torch.ones(3, 3, 8, 8)
    for _ in range(5):
        dsa(x)
        dsa.apply(x, dsa.sample(3, torch.Generator().manual_seed(2), siamese=True))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_non_siamese_draws_differ_across_images() -> None:
    dsa = DSA(strategy="color")
    params = dsa.sample(6, torch.Generator().manual_seed(0), siamese=False)
    assert params.variates["brightness"].shape == (6, 1)
    assert params.variates["brightness"].unique().numel() == 6
    out = dsa.apply(torch.zeros(6, 1, 2, 2), DSAParams(("brightness",), params.variates, siamese=False))
    assert out[:, 0, 0, 0].unique().numel() == 6


def test_mode_s_picks_one_group_uniformly_and_mode_m_applies_all_in_order() -> None:
    generator = torch.Generator().manual_seed(0)
    dsa = DSA()
    counts = {group: 0 for group in GROUPS}
    for _ in range(600):
        ops = dsa.sample(1, generator).ops
        group = next(g for g in GROUPS if OP_GROUPS[g] == ops)
        counts[group] += 1
    # 600 draws over 6 groups: 100 expected each, std ~9.1; 5 sigma either way.
    assert all(55 <= count <= 145 for count in counts.values()), counts
    all_ops = DSA(strategy="flip_color_crop", mode="M").sample(1, generator).ops
    assert all_ops == ("flip", "brightness", "saturation", "contrast", "crop")


def test_same_seed_reproduces_and_none_strategy_is_identity() -> None:
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(DSA(seed=7)(x), DSA(seed=7)(x))
    assert torch.equal(DSA(strategy="none")(x), x)


def test_bad_configuration_and_mismatched_params_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown DSA op group"):
        DSA(strategy="color_blur")
    with pytest.raises(ValueError, match="mode must be"):
        DSA(mode="X")  # type: ignore[arg-type]
    dsa = DSA(strategy="flip")
    with pytest.raises(ValueError, match="batch of 3"):
        dsa.apply(torch.randn(4, 3, 8, 8), dsa.sample(3, siamese=False))


def test_bf16_images_keep_their_dtype() -> None:
    dsa = DSA(mode="M", seed=0)
    assert dsa(torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_params_apply_to_cuda_images() -> None:
    dsa = DSA(mode="M")
    x = torch.randn(3, 3, 16, 16)
    params = dsa.sample(3, torch.Generator().manual_seed(0), siamese=False)
    torch.testing.assert_close(dsa.apply(x.cuda(), params).cpu(), dsa.apply(x, params), atol=1e-5, rtol=0)


def test_rotation_by_minus_15_degrees_tilts_a_line_by_tan_15() -> None:
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, :] = 1.0  # a horizontal line through the centre
    out = only("rotate", [[0.0]], DSA(), x)[0, 0]  # u = 0 -> angle -15 degrees
    # Output (col, row) samples the input at rotated coordinates, so the line becomes
    # row - 16 = tan(15 deg) * (col - 16): 12 columns right of centre it sits 3.2 rows lower.
    assert int(out[:, 28].argmax()) == 19 and int(out[:, 4].argmax()) == 13
