"""Simulations for the working-likelihood SVR (docs/svr.md): test RMSE and fit time against scikit-learn's SVR
with the LIBSVM default ε = 0.1 and with ε chosen by 5-fold cross-validation.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/svr_simulations.py

Grid: regression function (linear, sinc) × noise (ε-Laplacian with ε = 1, normal, uniform; all scaled to the
same standard deviation) × noise sd × training size, with ``--repetitions`` fresh data sets per cell. The RMSE
is measured against the noise-free regression function on 2000 test points. Resumable: finished cells are
cached in benchmarks/work/svr_simulations/ (git-ignored) and skipped on rerun; the cell key carries a hash of
the methods' parameters and of distillset/svr's source (``methods_tag``), so a changed estimator recomputes.

The compared methods (``METHODS``) and the per-fit measurement (``measure``) are reused by svr_real.py.
"""

from __future__ import annotations

import argparse
import time
import warnings
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

import distillset.svr
from common import ROOT, Cells, command_line, markdown_table, mean_std, write_results
from distillset.svr import SmallSampleWarning, WorkingLikelihoodSVR, epsilon_laplace

NAME = "svr_simulations"
CV_EPSILON_GRID = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # on the standardised response
TRUE_WORKING_EPSILON = 1.0  # ε of the ε-Laplacian noise
N_TEST = 2000


def _standardised_svr(epsilon: float = 0.1) -> Pipeline:
    """LIBSVM defaults (RBF, gamma='scale', C = 1) on standardised X and standardised y."""
    svr = TransformedTargetRegressor(SVR(C=1.0, epsilon=epsilon), transformer=StandardScaler())
    return make_pipeline(StandardScaler(), svr)


def _cv_epsilon_svr(seed: int) -> GridSearchCV:
    grid = {"transformedtargetregressor__regressor__epsilon": list(CV_EPSILON_GRID)}
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    return GridSearchCV(_standardised_svr(), grid, cv=folds, scoring="neg_mean_squared_error")


def _working_likelihood_svr(noise_scaled_C: bool | str) -> Callable[[int], Pipeline]:
    return lambda seed: make_pipeline(
        StandardScaler(), WorkingLikelihoodSVR(C=1.0, noise_scaled_C=noise_scaled_C, random_state=seed)
    )


METHODS: dict[str, Callable[[int], RegressorMixin]] = {
    "svr_default": lambda seed: _standardised_svr(0.1),
    "svr_cv_epsilon": _cv_epsilon_svr,
    "wl_svr": _working_likelihood_svr(noise_scaled_C=True),  # the estimator's default: C/σ (eq. 5)
    "wl_svr_auto": _working_likelihood_svr(noise_scaled_C="auto"),  # ablation: C/σ or C by eq. (7)
    "wl_svr_fixed_C": _working_likelihood_svr(noise_scaled_C=False),  # ablation: always C, own (ε, σ) loop
}


def methods_tag() -> str:
    """Short hash of every method's parameters and of the estimator's source: part of each cell key, so cells
    computed with other settings or another version of distillset.svr are not reused."""
    parts = [f"{name}:{sorted(make(0).get_params(deep=True).items())!r}" for name, make in METHODS.items()]
    sources = sorted((Path(distillset.svr.__file__).parent).glob("*.py"))
    digest = zlib.crc32("\n".join(parts).encode() + b"".join(path.read_bytes() for path in sources))
    return f"{digest:08x}"


def measure(
    model: RegressorMixin, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    """Fit one model; test RMSE, single-thread CPU seconds of ``fit``, and (ε̂, σ̂, penalty) for the WL-SVR."""
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # expected on the tiny real sets; noted in the table
        model.fit(X, y)
    record = {
        "fit_seconds": time.process_time() - start,
        "rmse": float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2))),
    }
    if isinstance(model, Pipeline) and isinstance(model[-1], WorkingLikelihoodSVR):
        wl = model[-1]
        record.update(
            epsilon_hat=wl.epsilon_,
            sigma_hat=wl.sigma_,
            n_iter=wl.n_iter_,
            noise_scaled_C=float(wl.noise_scaled_C_),
            penalty=wl.penalty_,
        )
    return record


def summarise(per_rep: dict[str, list[dict[str, float]]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """RESULTS.md rows (metrics ``rmse`` and ``fit_seconds``) for every method of one cell."""
    cv_rmse = np.array([r["rmse"] for r in per_rep["svr_cv_epsilon"]])
    rows = []
    for method in METHODS:
        records = per_rep[method]
        extra = dict(base["extra"])
        rmse = np.array([r["rmse"] for r in records])
        extra["rmse_ratio_to_cv_mean"] = round(float(np.mean(rmse / cv_rmse)), 4)
        extra["win_rate_vs_cv"] = round(float(np.mean(rmse <= cv_rmse)), 3)
        if "epsilon_hat" in records[0]:
            for key in ("epsilon_hat", "sigma_hat", "n_iter", "noise_scaled_C"):
                extra[f"{key}_mean"] = round(float(np.mean([r[key] for r in records])), 4)
            extra["n_iter_max"] = int(max(r["n_iter"] for r in records))
            extra["max_iter"] = METHODS[method](0)[-1].max_iter
        for metric in ("rmse", "fit_seconds"):
            mean, std = mean_std(r[metric] for r in records)
            rows.append(
                {
                    "dataset": base["dataset"],
                    "method": method,
                    "model": "svr-rbf",
                    "metric": metric,
                    "mean": mean,
                    "std": std,
                    "n": len(records),
                    "extra": extra,
                }
            )
    return rows


def regression_function(name: str) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(input dimension, f). Inputs are uniform on [-1, 1]^d (linear) or [-3, 3] (sinc)."""
    if name == "linear":
        return 2, lambda X: 1.0 + 2.0 * X[:, 0] - X[:, 1]
    if name == "sinc":
        return 1, lambda X: np.sinc(X[:, 0])
    raise ValueError(f"unknown regression function {name!r}; use 'linear' or 'sinc'")


def noise(kind: str, sd: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean noise with standard deviation ``sd``."""
    if kind == "normal":
        return rng.normal(scale=sd, size=size)
    if kind == "uniform":
        return rng.uniform(-np.sqrt(3.0) * sd, np.sqrt(3.0) * sd, size=size)
    if kind == "eps-laplace":
        scale = sd / epsilon_laplace.std(TRUE_WORKING_EPSILON)
        return epsilon_laplace.rvs(TRUE_WORKING_EPSILON, scale=scale, size=size, random_state=rng)
    raise ValueError(f"unknown noise {kind!r}; use 'eps-laplace', 'normal' or 'uniform'")


def run_cell(function: str, noise_kind: str, sd: float, n_train: int, repetitions: int) -> dict[str, Any]:
    dim, f = regression_function(function)
    half_width = 3.0 if function == "sinc" else 1.0
    per_rep: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for rep in range(repetitions):
        rng = np.random.default_rng([zlib.crc32(f"{function}/{noise_kind}/{sd}/{n_train}".encode()), rep])
        X = rng.uniform(-half_width, half_width, size=(n_train, dim))
        X_test = rng.uniform(-half_width, half_width, size=(N_TEST, dim))
        y = f(X) + noise(noise_kind, sd, n_train, rng)
        for method in METHODS:
            per_rep[method].append(measure(METHODS[method](rep), X, y, X_test, f(X_test)))
    return per_rep


COMPARISON_COLUMNS = [
    *[f"RMSE {m}" for m in METHODS],
    "WL/CV RMSE",
    "WL ≤ CV",
    "ε̂",
    "n_iter",
    "auto/CV RMSE",
    "auto: C/σ̂ kept",
    *[f"ms {m}" for m in METHODS],
]
COMPARISON_NOTE = (
    "`WL/CV RMSE` is the mean per-repetition (per-split) ratio wl_svr / svr_cv_epsilon, `WL ≤ CV` the fraction of "
    "repetitions where wl_svr is at least as accurate, ε̂ the mean estimated standardised insensitivity, `n_iter` "
    f"the mean (max) number of (ε, σ) estimates of wl_svr (max_iter = {WorkingLikelihoodSVR().max_iter}), "
    "`auto/CV RMSE` the same ratio for wl_svr_auto and `auto: C/σ̂ kept` the fraction of its fits whose "
    "cross-validated penalty choice (eq. 7) kept C/σ̂ (eq. 5) rather than C; `ms` are single-thread CPU "
    "milliseconds per fit, including the CV search or the cross-fitted residuals."
)


def comparison_line(cell_rows: list[dict[str, Any]], digits: int = 4) -> dict[str, str]:
    """The COMPARISON_COLUMNS of one cell (or data set), from its ``summarise`` rows."""
    line = {}
    for row in cell_rows:
        if row["metric"] == "rmse":
            line[f"RMSE {row['method']}"] = f"{row['mean']:.{digits}g} ± {row['std']:.2g}"
        else:
            line[f"ms {row['method']}"] = f"{1000 * row['mean']:.0f}"
    wl = next(row["extra"] for row in cell_rows if row["method"] == "wl_svr")
    auto = next(row["extra"] for row in cell_rows if row["method"] == "wl_svr_auto")
    line.update(
        {
            "WL/CV RMSE": f"{wl['rmse_ratio_to_cv_mean']:.3f}",
            "WL ≤ CV": f"{wl['win_rate_vs_cv']:.2f}",
            "ε̂": f"{wl['epsilon_hat_mean']:.2f}",
            "n_iter": f"{wl['n_iter_mean']:.1f} ({wl['n_iter_max']})",
            "auto/CV RMSE": f"{auto['rmse_ratio_to_cv_mean']:.3f}",
            "auto: C/σ̂ kept": f"{auto['noise_scaled_C_mean']:.2f}",
        }
    )
    return line


def comparison_summary(cells_rows: list[list[dict[str, Any]]], unit: str) -> str:
    """How often wl_svr matches the CV-tuned SVR over the ``unit`` (cells, data sets), and at what CPU cost."""

    def value(rows: list[dict[str, Any]], method: str, metric: str, key: str = "mean") -> Any:
        return next(r for r in rows if r["method"] == method and r["metric"] == metric)[key]

    ratios = [value(rows, "wl_svr", "rmse", "extra")["rmse_ratio_to_cv_mean"] for rows in cells_rows]
    wins = sum(value(rows, "wl_svr", "rmse") <= value(rows, "svr_cv_epsilon", "rmse") for rows in cells_rows)
    cost = [value(rows, "wl_svr", "fit_seconds") / value(rows, "svr_cv_epsilon", "fit_seconds") for rows in cells_rows]
    return (
        f"Over {len(cells_rows)} {unit}: the mean RMSE of wl_svr is ≤ that of svr_cv_epsilon in {wins}; the "
        f"per-repetition RMSE ratio wl_svr / svr_cv_epsilon averages {np.mean(ratios):.3f} over {unit} (median "
        f"{np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}); a wl_svr fit costs "
        f"{np.mean(cost):.2f}× the CPU time of the CV-tuned fit on average.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--functions", nargs="+", default=["linear", "sinc"])
    parser.add_argument("--noises", nargs="+", default=["eps-laplace", "normal", "uniform"])
    parser.add_argument("--noise-sds", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--repetitions", type=int, default=50)
    args = parser.parse_args()

    cells = Cells(NAME, root=ROOT / "work")  # git-ignored cache of finished repetitions
    rows: list[dict[str, Any]] = []
    cells_rows: list[list[dict[str, Any]]] = []
    table: list[dict[str, Any]] = []
    compute_seconds = 0.0
    tag = methods_tag()
    for function in args.functions:
        for noise_kind in args.noises:
            for sd in args.noise_sds:
                for n_train in args.sizes:
                    key = f"{function}-{noise_kind}-sd{sd}-n{n_train}-r{args.repetitions}-{tag}"
                    cell = cells.computed(
                        key, partial(run_cell, function, noise_kind, sd, n_train, args.repetitions), NAME)
                    compute_seconds += cell["seconds"]
                    true_epsilon = TRUE_WORKING_EPSILON if noise_kind == "eps-laplace" else None
                    base = {
                        "dataset": f"sim-{function}",
                        "extra": {
                            "noise": noise_kind,
                            "noise_sd": sd,
                            "n_train": n_train,
                            "n_test": N_TEST,
                            "true_epsilon": true_epsilon,
                            "rmse_target": "noise-free regression function",
                        },
                    }
                    cell_rows = summarise(cell["per_rep"], base)
                    rows.extend(cell_rows)
                    cells_rows.append(cell_rows)
                    table.append(
                        {
                            "function": function,
                            "noise": noise_kind,
                            "sd": sd,
                            "n": n_train,
                            **comparison_line(cell_rows),
                        }
                    )
    notes = (
        "RMSE against the noise-free regression function on 2000 test points (mean ± std over "
        f"{args.repetitions} repetitions); ε̂ has truth 1.0 for eps-laplace noise. {COMPARISON_NOTE}\n\n"
    )
    write_results(
        NAME,
        command_line(),
        rows,
        [],
        compute_seconds,
        comparison_summary(cells_rows, "cells")
        + notes
        + markdown_table(table, ["function", "noise", "sd", "n", *COMPARISON_COLUMNS]),
        extra={"wall_seconds_note": "sum of the cells' wall time over all (resumed) runs"},
    )


if __name__ == "__main__":
    main()
