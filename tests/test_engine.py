import os
import signal

import pytest
import torch

from distillset.data.base import DatasetInfo, ImageSet
from distillset.engine import CheckpointMismatchError, DistillConfig, Distiller, config_for_method, run_together
from distillset.engine.methods import method_names, resolve_method
from distillset.engine.networks import QueueConfig, TrainedNetworkQueue
from distillset.engine.synthetic import expand, expanded_labels, pack
from distillset.objectives import OBJECTIVES, MatchingObjective, unidd
from distillset.registry import UnknownNameError

INFO = DatasetInfo("tiny", 1, (8, 8), 3, (0.0,), (1.0,))


@pytest.fixture(scope="module")
def real() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    patterns = torch.randn(3, 1, 8, 8, generator=g) * 2  # a spatial pattern per class (instance norm keeps it)
    images = torch.randn(120, 1, 8, 8, generator=g) * 0.5 + patterns[labels]
    return ImageSet(images, labels)


def _config(**kw) -> DistillConfig:
    base = dict(ipc=2, iterations=4, batch_real=16, model="convnet3", checkpoint_every=2, log_every=1)
    base.update(kw)
    return DistillConfig(**base)


def _held_out_dm_distance(real: ImageSet, synthetic: ImageSet) -> float:
    """DM's loss averaged over 5 fixed random networks that distillation never saw."""
    from distillset.nets import get_network

    total = 0.0
    with torch.no_grad():
        for seed in range(5):
            net = get_network("convnet3", 1, 3, (8, 8), seed=10_000 + seed)
            for c in range(3):
                diff = (net.embed(real.images[real.labels == c]).mean(0)
                        - net.embed(synthetic.images[synthetic.labels == c]).mean(0))
                total += float(diff.pow(2).sum())
    return total


def test_dm_reduces_the_distribution_gap_on_held_out_networks(real):
    distiller = Distiller(real, INFO, _config(iterations=80, dsa_strategy="none", init="noise", lr_img=10.0))
    before = _held_out_dm_distance(real, distiller.synthetic_set())
    after = _held_out_dm_distance(real, distiller.run())
    assert after < 0.85 * before


@pytest.mark.parametrize("method", ["dm", "idm"])
def test_resume_is_bit_for_bit(real, tmp_path, method):
    overrides = dict(ipc=1, iterations=4, batch_real=16, checkpoint_every=2, log_every=1)
    straight = Distiller(real, INFO, config_for_method(method, **overrides), out_dir=tmp_path / "a")
    expected = straight.run().images

    first = Distiller(real, INFO, config_for_method(method, **{**overrides, "iterations": 2}), out_dir=tmp_path / "b")
    first.run()
    resumed = Distiller(real, INFO, config_for_method(method, **overrides), out_dir=tmp_path / "b")
    assert resumed.load_checkpoint() and resumed.iteration == 2
    result = resumed.run(resume=True).images
    assert torch.equal(result, expected)


def test_checkpoint_with_other_settings_is_refused(real, tmp_path):
    Distiller(real, INFO, _config(iterations=2), out_dir=tmp_path).run()
    with pytest.raises(CheckpointMismatchError, match="ipc"):
        Distiller(real, INFO, _config(iterations=4, ipc=3), out_dir=tmp_path).run(resume=True)


def test_cosine_learning_rate_schedule(real, tmp_path):
    config = _config(iterations=4, lr_img=2.0, lr_schedule="cosine")
    assert [config.learning_rate(t) for t in range(5)] == pytest.approx([2.0, 1.0 + 2 ** -0.5, 1.0, 1 - 2 ** -0.5, 0])
    assert _config(iterations=4, lr_img=2.0).learning_rate(3) == 2.0
    seen = []
    distiller = Distiller(real, INFO, config)
    original = distiller.optimizer.step
    distiller.optimizer.step = lambda: (seen.append(distiller.optimizer.param_groups[0]["lr"]), original())[1]
    distiller.run()
    assert seen == pytest.approx([config.learning_rate(t) for t in range(4)])
    # the schedule depends on the length of the run: a checkpoint of a 2-iteration cosine run is not extended
    Distiller(real, INFO, _config(iterations=2, lr_schedule="cosine"), out_dir=tmp_path).run()
    with pytest.raises(CheckpointMismatchError, match="iterations"):
        Distiller(real, INFO, _config(iterations=4, lr_schedule="cosine"), out_dir=tmp_path).run(resume=True)
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        _config(lr_schedule="step")


class _Exploding(MatchingObjective):
    def __init__(self, at: int = 3, error: type[BaseException] | None = None) -> None:
        self.at, self.error = at, error

    def class_loss(self, real, synthetic, class_index, context):
        loss = (real.mean(0) - synthetic.mean(0)).pow(2).sum()
        if context.iteration >= self.at:
            if self.error is not None:
                raise self.error()
            return loss * float("nan")
        return loss


@pytest.fixture
def exploding():
    OBJECTIVES._entries["test-exploding"] = _Exploding
    yield "test-exploding"
    del OBJECTIVES._entries["test-exploding"]


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(real, tmp_path, exploding):
    distiller = Distiller(real, INFO, _config(objective=exploding, iterations=6), out_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="loss is nan at iteration 3.*last good checkpoint"):
        distiller.run()
    again = Distiller(real, INFO, _config(objective=exploding, iterations=6), out_dir=tmp_path)
    assert again.load_checkpoint() and again.iteration == 2
    assert torch.isfinite(again.stored).all()


def test_ctrl_c_saves_a_checkpoint(real, tmp_path, exploding):
    config = _config(objective=exploding, objective_params={"error": KeyboardInterrupt}, iterations=6,
                     checkpoint_every=0)
    distiller = Distiller(real, INFO, config, out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        distiller.run()
    again = Distiller(real, INFO, config, out_dir=tmp_path)
    assert again.load_checkpoint() and again.iteration == 3


@pytest.mark.parametrize(("seconds", "expected"), [(0.0, [5]), (1e-9, [1, 2, 3, 4, 5, 5])])
def test_slow_runs_also_checkpoint_by_time(real, tmp_path, monkeypatch, seconds, expected):
    """A killed job cannot save on its way out: with ``checkpoint_seconds`` it loses at most that long."""
    saved = []
    monkeypatch.setattr(Distiller, "save_checkpoint", lambda self: saved.append(self.iteration))
    config = _config(iterations=5, checkpoint_every=0, checkpoint_seconds=seconds)
    Distiller(real, INFO, config, out_dir=tmp_path).run()
    assert saved == expected  # the final checkpoint, plus one per iteration once the interval has passed


class _SignalsItself(MatchingObjective):
    """DM's mean matching that sends ``signum`` to its own process once, during iteration ``at``."""

    def __init__(self, signum: int, at: int = 1) -> None:
        self.signum, self.at, self.sent = signum, at, False

    def class_loss(self, real, synthetic, class_index, context):
        if context.iteration == self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return (real.mean(0) - synthetic.mean(0)).pow(2).sum()


@pytest.mark.parametrize("signum, error", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_signal_finishes_the_iteration_checkpoints_and_resumes_bit_for_bit(real, tmp_path, signum, error):
    OBJECTIVES._entries["test-signals"] = _SignalsItself
    try:
        def config(signum: int) -> DistillConfig:
            return _config(objective="test-signals", objective_params={"signum": signum}, iterations=4,
                           checkpoint_every=0, step_per_class=True)

        expected = Distiller(real, INFO, config(0)).run().images  # signal 0: nothing is sent
        with pytest.raises(error) as stopped:
            Distiller(real, INFO, config(int(signum)), out_dir=tmp_path).run()
        if error is SystemExit:
            assert stopped.value.code == 143
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
        resumed = Distiller(real, INFO, config(int(signum)), out_dir=tmp_path)
        assert resumed.load_checkpoint() and resumed.iteration == 2  # iteration 1 (0-based) completed
        assert torch.equal(resumed.run(resume=True).images, expected)
    finally:
        del OBJECTIVES._entries["test-signals"]


def _group_configs(iterations: int) -> list[DistillConfig]:
    """DM, HDD and CSDM (which draws frequencies from its own generator) at two IPCs and iteration counts."""
    small = dict(batch_real=16, checkpoint_every=0, log_every=1)
    return [config_for_method("dm", ipc=2, iterations=iterations, **small),
            config_for_method("hdd", ipc=1, iterations=iterations - 1, **small),
            config_for_method("csdm", ipc=2, iterations=iterations, objective_params={"num_frequencies": 64}, **small)]


def test_run_together_gives_each_run_its_own_result_and_draws_the_real_pass_once(real, monkeypatch):
    draws = []
    real_batch = Distiller._real_picks
    monkeypatch.setattr(Distiller, "_real_picks", lambda self, cls: draws.append(cls) or real_batch(self, cls))
    alone = [Distiller(real, INFO, config).run().images for config in _group_configs(3)]
    assert len(draws) == 3 * (3 + 2 + 3)  # 3 classes per iteration of each run
    draws.clear()
    together = run_together([Distiller(real, INFO, config) for config in _group_configs(3)])
    assert len(draws) == 3 * 3  # once per iteration for the whole group
    for expected, result in zip(alone, together, strict=True):
        assert torch.equal(result.images, expected)


def test_run_together_resumes_bit_for_bit(real, tmp_path):
    alone = [Distiller(real, INFO, config).run().images for config in _group_configs(4)]
    dirs = [tmp_path / str(i) for i in range(3)]
    run_together([Distiller(real, INFO, c, out_dir=d) for c, d in zip(_group_configs(2), dirs, strict=True)])
    resumed = run_together([Distiller(real, INFO, c, out_dir=d) for c, d in zip(_group_configs(4), dirs, strict=True)],
                           resume=True)
    for expected, result in zip(alone, resumed, strict=True):
        assert torch.equal(result.images, expected)


def test_run_together_refuses_runs_that_cannot_share_the_real_pass(real):
    dm = Distiller(real, INFO, _config())
    with pytest.raises(ValueError, match="batch_real"):
        run_together([dm, Distiller(real, INFO, _config(batch_real=8))])
    other_real = ImageSet(real.images.clone(), real.labels.clone())
    with pytest.raises(ValueError, match="real set"):
        run_together([dm, Distiller(other_real, INFO, _config())])
    idm = dict(ipc=1, batch_real=16)
    with pytest.raises(ValueError, match="network_source"):
        run_together([Distiller(real, INFO, config_for_method("idm", iterations=1, **idm)),
                      Distiller(real, INFO, config_for_method("dm", iterations=1, **idm))])
    with pytest.raises(ValueError, match="same number of iterations"):
        run_together([Distiller(real, INFO, config_for_method("idm", iterations=n, **idm)) for n in (1, 2)])


def _idm_group_configs(iterations: int) -> list[DistillConfig]:
    """IDM and IDM+HDD at two IPCs: they share the network queue (pushes every 2 iterations here)."""
    small = dict(batch_real=16, checkpoint_every=2, log_every=1, iterations=iterations,
                 queue={"push_interval": 2, "train_steps": 2})
    return [config_for_method("idm", ipc=1, **small), config_for_method("idm+hdd", ipc=2, **small)]


def test_ridge_filter_runs_together_derive_the_real_statistics_once_per_iteration(real, monkeypatch):
    calls = []
    statistics = unidd.correlation_statistics
    monkeypatch.setattr(unidd, "correlation_statistics", lambda *args: calls.append(1) or statistics(*args))

    def configs() -> list[DistillConfig]:  # CFM starts at lowpass's beta: step 0 also shares the filters
        return [config_for_method(method, ipc=2, iterations=3, batch_real=16, checkpoint_every=0)
                for method in ("cfm", "lowpass", "highpass")]

    alone = [Distiller(real, INFO, config).run().images for config in configs()]
    assert len(calls) == 3 * 3  # real FFC/FLC per iteration of each run (the synthetic side uses the Gram form)
    calls.clear()
    together = run_together([Distiller(real, INFO, config) for config in configs()])
    assert len(calls) == 3
    for expected, result in zip(alone, together, strict=True):
        assert torch.equal(result.images, expected)


def test_idm_runs_together_share_the_queue_and_match_runs_alone(real, tmp_path, monkeypatch):
    trained = []
    after_step = TrainedNetworkQueue.after_step
    monkeypatch.setattr(TrainedNetworkQueue, "after_step",
                        lambda self, i, r: trained.append(i) or after_step(self, i, r))
    alone = [Distiller(real, INFO, c).run().images for c in _idm_group_configs(4)]
    assert trained == [0, 1, 2, 3] * 2
    trained.clear()
    dirs = [tmp_path / str(i) for i in range(2)]
    run_together([Distiller(real, INFO, c, out_dir=d) for c, d in zip(_idm_group_configs(2), dirs, strict=True)])
    resumed = run_together([Distiller(real, INFO, c, out_dir=d)
                            for c, d in zip(_idm_group_configs(4), dirs, strict=True)], resume=True)
    assert trained == [0, 1, 2, 3]  # the queue trained once per iteration for the whole group
    for expected, result in zip(alone, resumed, strict=True):
        assert torch.equal(result.images, expected)


def test_idm_runs_at_different_checkpoints_are_not_run_together(real, tmp_path):
    configs = _idm_group_configs(2)
    Distiller(real, INFO, configs[0], out_dir=tmp_path / "a").run()
    with pytest.raises(ValueError, match="same iteration"):
        run_together([Distiller(real, INFO, c, out_dir=tmp_path / d) for c, d in zip(configs, "ab", strict=True)],
                     resume=True)


def test_class_shard_distils_only_its_classes(real):
    distiller = Distiller(real, INFO, _config(classes=[2, 0], iterations=1))
    distiller.run()
    assert distiller.synthetic_set().labels.tolist() == [2, 2, 0, 0]
    with pytest.raises(ValueError, match="out of range"):
        Distiller(real, INFO, _config(classes=[5]))


def test_ipc_one_works_with_dsa(real):
    synthetic = Distiller(real, INFO, _config(ipc=1, iterations=3)).run()
    assert synthetic.images.shape == (3, 1, 8, 8) and torch.isfinite(synthetic.images).all()


def test_expand_and_pack_layout():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    stored = pack(images, 2)
    assert stored.shape == (1, 1, 8, 8)
    assert stored[0, 0, 0, 0] == 0 and stored[0, 0, 0, 7] == 1 and stored[0, 0, 7, 0] == 2 and stored[0, 0, 7, 7] == 3
    assert torch.allclose(expand(stored, 2), images)
    assert expanded_labels(torch.tensor([5, 6]), 2).tolist() == [5, 5, 5, 5, 6, 6, 6, 6]
    with pytest.raises(ValueError, match="divisible"):
        expand(torch.zeros(1, 1, 7, 7), 2)


def test_idm_preset_expands_and_uses_queue(real):
    distiller = Distiller(real, INFO, config_for_method("idm", ipc=1, iterations=2, batch_real=16))
    synthetic = distiller.run()
    assert synthetic.images.shape == (12, 1, 8, 8)  # 3 classes x 1 stored image x 4
    queue = distiller.sampler.queue
    assert len(queue) == 4  # 3 to start, one pushed at iteration 0 (as the reference)
    # after each of the 2 iterations, 2 queue nets took 10 steps on 256 real images
    assert sum(member.seen for member in queue) == 2 * 2 * 10 * 256
    assert 1 <= sum(member.seen > 0 for member in queue) <= 4


def test_idm_presets_carry_the_reference_queue_settings():
    ipc1, ipc10, ipc50 = (config_for_method("idm", ipc=ipc) for ipc in (1, 10, 50))
    assert (ipc1.batch_real, ipc1.queue.push_interval) == (5000, 5)  # the IPC-1 commands
    assert (ipc10.batch_real, ipc10.queue.push_interval) == (256, 30)
    assert (ipc10.queue.accuracy_window, ipc50.queue.accuracy_window) == (100, 500)  # eval_interval
    assert config_for_method("idm+hdd", ipc=1, batch_real=64).batch_real == 64  # overrides win
    assert config_for_method("idm", ipc=1, queue={"capacity": 7}).queue == QueueConfig(
        capacity=7, push_interval=5, accuracy_window=100)
    with pytest.raises(ValueError, match="push_interval must be >= 1"):
        QueueConfig(push_interval=0)


def test_queue_accuracy_counts_the_recent_window_only(real):
    queue = TrainedNetworkQueue("convnet3", INFO, 0, torch.device("cpu"),
                                QueueConfig(initial=1, push_interval=100, train_nets=1, train_steps=1,
                                            train_batch=8, accuracy_window=2))
    queue.sample(0)  # pushes a second net at iteration 0
    for iteration in range(2):
        queue.after_step(iteration, real)
    assert sum(member.seen for member in queue.queue) == 16
    queue.sample(1)  # not a window boundary: the meters keep counting
    assert sum(member.seen for member in queue.queue) == 16
    queue.sample(2)  # the window ends: every meter starts again, as the reference's reset
    assert all(member.seen == 0 and member.accuracy == 0.0 for member in queue.queue)


def test_method_presets():
    assert resolve_method("dm")["objective"] == "dm"
    idm_hdd = resolve_method("idm+hdd")
    assert idm_hdd["objective"] == "hdd" and idm_hdd["network_source"] == "queue"
    assert idm_hdd["objective_params"] == {"curvature_k": 2.4, "weight": 100.0}
    # per-IPC settings of the CIFAR-10 commands
    assert (idm_hdd["lr_img"], idm_hdd["ce_weight"]) == (1.0, 0.5)
    def rates(method: str, ipc: int) -> tuple[float, float]:
        settings = resolve_method(method, ipc=ipc)
        return settings["lr_img"], settings["ce_weight"]

    assert rates("idm+hdd", 50) == (0.2, 0.1) and rates("idm+hdd", 1) == (0.5, 0.5)
    assert rates("idm", 1) == rates("idm", 10) == (0.2, 0.5) and rates("idm", 50) == (0.2, 0.1)
    assert config_for_method("idm", ipc=50).ce_weight == 0.1
    assert config_for_method("idm", ipc=50, ce_weight=0.3).ce_weight == 0.3  # overrides win
    assert resolve_method("hdd")["objective_params"] == {}  # the objective's own defaults apply
    hdd = config_for_method("hdd").objective_params
    assert (hdd["curvature_k"], hdd["weight"], hdd["max_norm"]) == (1.0, 20.0, 10.0)
    assert {"dm", "hdd", "idm", "idm+hdd"} <= set(method_names())
    with pytest.raises(UnknownNameError, match="choose one of"):
        resolve_method("nope")
    with pytest.raises(UnknownNameError):
        resolve_method("dm+hdd")


def test_in_place_reinitialisation_equals_a_fresh_network():
    from distillset.engine.networks import reinitialize_
    from distillset.nets import get_network

    net = get_network("convnet3", 1, 10, (28, 28), seed=1)
    reinitialize_(net, 42)
    fresh = get_network("convnet3", 1, 10, (28, 28), seed=42)
    for (name, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_queue_training_in_bf16_tracks_fp32(real):
    """IDM's queue training under bf16 autocast (the default where the CPU has native bf16) moves the nets as
    fp32 does: after 10 SGD steps the two differ by less than half of the fp32 update (measured: a third; a
    training that went its own way differs by about the whole update), and bf16 really was in effect. The
    parameters and the optimiser state stay fp32. Eager on both sides: compiling would dominate the test's time
    (the compile fallback is tested in test_runtime.py)."""
    steps = 10

    def trained(**kw) -> tuple[TrainedNetworkQueue, list[torch.Tensor]]:
        queue = TrainedNetworkQueue("convnet3", INFO, 0, torch.device("cpu"),
                                    QueueConfig(initial=1, train_steps=steps, train_batch=32), **kw)
        start = [p.detach().clone() for p in queue.queue[0].net.parameters()]
        queue.after_step(0, real)
        return queue, start

    (reference, start), (fast, _) = trained(precision="fp32"), trained(precision="bf16")
    ours, theirs = list(fast.queue[0].net.parameters()), list(reference.queue[0].net.parameters())
    assert all(p.dtype == torch.float32 for p in ours)
    assert all(fast.queue[0].optimizer.state[p]["momentum_buffer"].dtype == torch.float32 for p in ours)
    update = torch.cat([(b - a).flatten() for a, b in zip(start, theirs, strict=True)]).norm()
    gap = torch.cat([(b - a).flatten() for a, b in zip(theirs, ours, strict=True)]).norm()
    assert 0 < gap < 0.5 * update
    assert fast.queue[0].seen == reference.queue[0].seen == 32 * steps


def test_method_label_names_the_preset():
    methods = ["dm", "hdd", "idm", "idm+hdd"]
    assert [config_for_method(m).method_label for m in methods] == methods
