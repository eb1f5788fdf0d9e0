"""Real regression data sets that ship inside installed packages: the working-likelihood SVR against scikit-learn's
SVR with ε = 0.1 and with ε chosen by 5-fold cross-validation (the methods of svr_simulations.py).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/svr_real.py

Each data set is split ``--splits`` times at random into 75% training / 25% test; the RMSE is on the test
responses, in the units of y. Resumable: finished data sets are cached in benchmarks/work/svr_real/ (git-ignored),
keyed by the methods' parameters and distillset/svr's source (``svr_simulations.methods_tag``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import statsmodels.api as sm
from sklearn.datasets import load_diabetes
from sklearn.model_selection import ShuffleSplit

from common import ROOT, Cells, command_line, markdown_table, write_results
from distillset.svr import SMALL_SAMPLE_SIZE
from svr_simulations import (
    COMPARISON_COLUMNS,
    COMPARISON_NOTE,
    METHODS,
    comparison_line,
    comparison_summary,
    measure,
    methods_tag,
    summarise,
)

NAME = "svr_real"


def _statsmodels(name: str, target: str, features: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def load() -> tuple[np.ndarray, np.ndarray]:
        frame = getattr(sm.datasets, name).load_pandas().data
        return frame[features].to_numpy(dtype=float), frame[target].to_numpy(dtype=float)

    return load


DATASETS: dict[str, tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = {
    "diabetes": (
        "scikit-learn load_diabetes: disease progression ~ 10 baseline variables",
        lambda: load_diabetes(return_X_y=True),
    ),
    "longley": (
        "statsmodels longley: TOTEMP ~ GNPDEFL, GNP, UNEMP, ARMED, POP, YEAR",
        _statsmodels("longley", "TOTEMP", ["GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]),
    ),
    "stackloss": (
        "statsmodels stackloss: STACKLOSS ~ AIRFLOW, WATERTEMP, ACIDCONC",
        _statsmodels("stackloss", "STACKLOSS", ["AIRFLOW", "WATERTEMP", "ACIDCONC"]),
    ),
    "engel": ("statsmodels engel: foodexp ~ income (Engel curve)", _statsmodels("engel", "foodexp", ["income"])),
    "ccard": (
        "statsmodels ccard: AVGEXP ~ AGE, INCOME, INCOMESQ, OWNRENT",
        _statsmodels("ccard", "AVGEXP", ["AGE", "INCOME", "INCOMESQ", "OWNRENT"]),
    ),
}


def run_dataset(name: str, splits: int) -> dict[str, list[dict[str, float]]]:
    X, y = DATASETS[name][1]()
    per_rep: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for split, (train, test) in enumerate(ShuffleSplit(splits, test_size=0.25, random_state=0).split(X)):
        for method in METHODS:
            per_rep[method].append(measure(METHODS[method](split), X[train], y[train], X[test], y[test]))
    return per_rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--splits", type=int, default=50)
    args = parser.parse_args()

    cells = Cells(NAME, root=ROOT / "work")  # git-ignored cache of finished repetitions
    rows: list[dict[str, Any]] = []
    datasets_rows: list[list[dict[str, Any]]] = []
    table: list[dict[str, Any]] = []
    compute_seconds = 0.0
    tag = methods_tag()
    for name in args.datasets:
        key = f"{name}-s{args.splits}-{tag}"
        cell = cells.computed(key, partial(run_dataset, name, args.splits), NAME)
        compute_seconds += cell["seconds"]
        X, y = DATASETS[name][1]()
        n_train = len(y) - int(np.ceil(0.25 * len(y)))  # ShuffleSplit's training size
        base = {
            "dataset": name,
            "extra": {
                "source": DATASETS[name][0],
                "n_samples": len(y),
                "n_train": n_train,
                "n_features": X.shape[1],
                "test_fraction": 0.25,
                "rmse_target": "held-out responses, units of y",
                "small_sample_warning": n_train < SMALL_SAMPLE_SIZE,
            },
        }
        dataset_rows = summarise(cell["per_rep"], base)
        rows.extend(dataset_rows)
        datasets_rows.append(dataset_rows)
        table.append(
            {"data set": name, "n": len(y), "n train": n_train, "d": X.shape[1], **comparison_line(dataset_rows)}
        )
    notes = (
        f"{args.splits} random 75/25 splits per data set; RMSE on the held-out responses in the units of y "
        f"(mean ± std over splits). {COMPARISON_NOTE} wl_svr warns (SmallSampleWarning) on every fit of a data set "
        f"with fewer than {SMALL_SAMPLE_SIZE} training rows.\n\n"
    )
    write_results(
        NAME,
        command_line(),
        rows,
        [],
        compute_seconds,
        comparison_summary(datasets_rows, "data sets")
        + notes
        + markdown_table(table, ["data set", "n", "n train", "d", *COMPARISON_COLUMNS]),
        extra={"wall_seconds_note": "sum of the data sets' wall time over all (resumed) runs"},
    )


if __name__ == "__main__":
    main()
