"""Run under torchrun by tests/test_distributed.py (not collected by pytest): IDM and IDM+HDD distilled in
lockstep with classes sharded over the processes, the IDM set evaluated with the models split over the
processes, and a single-process DM checkpoint resumed by the processes. Rank 0 saves what the test compares
with single-process runs of the same settings."""

import sys
from pathlib import Path

import torch

from distillset.data import load_dataset
from distillset.engine import Distiller, config_for_method, run_together
from distillset.engine.distributed import join, ranks_from_env
from distillset.evaluate import EvalConfig, evaluate_synthetic

COMMON = dict(batch_real=32, real_precision="fp32", compile=False, checkpoint_every=0)
IDM = dict(COMMON, ipc=1, iterations=2)
RESUME = dict(COMMON, ipc=2, iterations=4, checkpoint_every=2)
EVAL = EvalConfig(epochs=1, num_models=3, batch_size=64, precision="fp32", compile=False)


def main(out: Path) -> None:
    ranks = ranks_from_env()
    group = join(ranks, torch.device("cpu"))
    splits = load_dataset("digits")
    idm = run_together([Distiller(splits.train, splits.info, config_for_method(method, **IDM), group=group)
                        for method in ("idm", "idm+hdd")])
    evaluation = evaluate_synthetic(idm[0], splits.test, splits.info, EVAL, group=group)
    resumed = Distiller(splits.train, splits.info, config_for_method("dm", **RESUME), out_dir=out / "resume",
                        group=group).run(resume=True)
    if ranks.is_writer:
        torch.save({"idm": idm[0].images, "idm+hdd": idm[1].images, "accuracies": evaluation.accuracies,
                    "resumed": resumed.images}, out / "results.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
