"""Every registered objective, through the same checks: typed config that round-trips, a finite differentiable
loss, clear errors for unknown parameters, and a lockstep run with DM that matches the runs alone."""

import dataclasses
import json

import pytest
import torch

from distillset.data.base import DatasetInfo, ImageSet
from distillset.engine import DistillConfig, Distiller, run_together
from distillset.objectives import OBJECTIVES, MatchingContext, get_objective, objective_names

NAMES = objective_names()
INFO = DatasetInfo("tiny", 1, (8, 8), 3, (0.0,), (1.0,))


def _context() -> MatchingContext:
    return MatchingContext(iteration=3, total_iterations=10, num_classes=3,
                           class_sizes=torch.tensor([40, 30, 20]), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def real() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    return ImageSet(torch.randn(60, 1, 8, 8, generator=g), labels)


def test_the_registry_holds_the_documented_methods():
    assert {"dm", "hdd", "csdm", "sdd", "cfm", "lowpass", "highpass"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_a_typed_dataclass_that_rebuilds_the_objective(name):
    objective = get_objective(name)
    config = objective.config()
    assert dataclasses.is_dataclass(config) and type(config) is OBJECTIVES.get(name).config_class()
    recorded = json.loads(json.dumps(dataclasses.asdict(config)))  # what a manifest holds
    assert get_objective(name, **recorded).config() == config
    field_types = {f.name: f.type for f in dataclasses.fields(config)}
    for field_name, value in dataclasses.asdict(config).items():
        if field_types[field_name] is float:
            assert isinstance(value, float), field_name


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_parameter_names_the_accepted_ones(name):
    accepted = [f.name for f in dataclasses.fields(OBJECTIVES.get(name).config_class())]
    with pytest.raises(ValueError, match="has no parameter no_such_thing") as error:
        get_objective(name, no_such_thing=1)
    assert all(field_name in str(error.value) for field_name in accepted)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_and_differentiable(name):
    g = torch.Generator().manual_seed(1)
    real = [torch.randn(12, 16, generator=g) + c for c in range(3)]
    synthetic = [torch.randn(4, 16, generator=g).requires_grad_() for _ in range(3)]
    loss = get_objective(name).loss(real, synthetic, [0, 1, 2], _context())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = torch.stack([s.grad.abs().sum() for s in synthetic])
    assert torch.isfinite(grads).all() and (grads > 0).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "dm"])
def test_runs_together_with_dm_sharing_the_real_pass(real, name):
    def configs() -> list[DistillConfig]:
        small = dict(ipc=2, iterations=2, batch_real=8, checkpoint_every=0, compile=False)
        return [DistillConfig(objective="dm", **small), DistillConfig(objective=name, **small)]

    alone = [Distiller(real, INFO, config).run().images for config in configs()]
    together = run_together([Distiller(real, INFO, config) for config in configs()])
    for expected, result in zip(alone, together, strict=True):
        assert torch.equal(result.images, expected)


def test_distill_config_records_every_objective_parameter():
    config = DistillConfig(objective="hdd", objective_params={"weight": 5})
    assert config.objective_params == dataclasses.asdict(get_objective("hdd", weight=5.0).config())
    assert DistillConfig(**dataclasses.asdict(config)) == config  # a manifest's config rebuilds it
    with pytest.raises(ValueError, match="has no parameter curvature"):
        DistillConfig(objective="hdd", objective_params={"curvature": 2.0})
