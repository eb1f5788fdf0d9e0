"""Why the working-likelihood SVR widened its tube on tiny real data sets (docs/svr.md, "Small samples"):
per-iteration (ε̂, σ̂, bound) logs on the training rows of svr_real.py's splits, and the sampling behaviour of
the (ε, σ) estimate on pure Gaussian residuals.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/svr_diagnostics.py

Part 1 replays, on the training rows only (no test response is used), the fixed-point loop of the first
version (estimate from the cross-fitted residuals of the previous estimate's SVR, ``--iterations`` times,
10% outside bound only) and logs per estimate the tube εσ, ε, σ (standardised response), the number of
residuals outside the tube, whether the bound set it, and J (eq. 6). It then fits the estimator as it is
now and records where it stopped. Part 2 draws Gaussian residuals at several n and reports ε̂ and the tube
with the 10% bound alone and with the small-sample count rule.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
import zlib
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, ShuffleSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from common import command_line, markdown_table, write_results
from distillset.svr import SmallSampleWarning, WorkingLikelihoodSVR, fit_working_likelihood, working_likelihood_loss
from svr_real import DATASETS
from svr_simulations import METHODS

NAME = "svr_diagnostics"
MIN_OUTSIDE_FRACTION = WorkingLikelihoodSVR().min_outside_fraction
MIN_OUTSIDE_COUNT = WorkingLikelihoodSVR().min_outside_count


def fixed_point_path(X: np.ndarray, y: np.ndarray, seed: int, iterations: int) -> list[dict[str, Any]]:
    """The first version's loop on one training set: eq. (5) SVRs, 5-fold cross-fitted residuals, 10% bound."""
    standardised = (y - y.mean()) / y.std()
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    svr = SVR(C=1.0, epsilon=0.0)  # the ε = 0 pilot
    path = []
    for _ in range(iterations):
        residuals = standardised - cross_val_predict(svr, X, standardised, cv=folds)
        if path:  # J of the previous estimate: its own SVR's cross-fitted residuals under its density
            path[-1]["J"] = working_likelihood_loss(residuals, path[-1]["epsilon"], path[-1]["sigma"]) / len(y)
        estimate = fit_working_likelihood(residuals, MIN_OUTSIDE_FRACTION)
        tube = estimate.epsilon * estimate.sigma
        path.append(
            {
                "epsilon": estimate.epsilon,
                "sigma": estimate.sigma,
                "tube": tube,
                "outside": int(np.sum(np.abs(residuals) > tube)),
                "at_bound": estimate.at_bound,
            }
        )
        svr = SVR(C=1.0 / estimate.sigma, epsilon=tube)
    return path


def real_data(name: str, splits: int, iterations: int) -> tuple[list[dict[str, Any]], list[str]]:
    X_all, y_all = DATASETS[name][1]()
    records, logs = [], []
    for split, (train, _) in enumerate(ShuffleSplit(splits, test_size=0.25, random_state=0).split(X_all)):
        X, y = StandardScaler().fit_transform(X_all[train]), y_all[train]
        path = fixed_point_path(X, y, split, iterations)
        model = WorkingLikelihoodSVR(random_state=split).fit(X, y)
        records.append(
            {
                "path": path,
                "n_train": len(y),
                "n_iter": model.n_iter_,
                "converged": model.converged_,
                "tube_now": model.epsilon_ * model.sigma_ / model.y_scale_,
            }
        )
        steps = " → ".join(
            f"{p['tube']:.2f} (ε {p['epsilon']:.1f}, σ {p['sigma']:.2f}, out {p['outside']}"
            + (", bound" if p["at_bound"] else "")
            + (f", J {p['J']:.2f}" if "J" in p else "")
            + ")"
            for p in path
        )
        logs.append(f"- split {split}: {steps}; now: n_iter {model.n_iter_}, tube {records[-1]['tube_now']:.2f}")
    return records, logs


def first_version_predictor(X: np.ndarray, y: np.ndarray, seed: int) -> SVR:
    """The first version's fit: three fixed-point estimates (10% bound only), the last one's SVR on all rows."""
    last = fixed_point_path(X, y, seed, iterations=3)[-1]
    return SVR(C=1.0 / last["sigma"], epsilon=last["tube"]).fit(X, (y - y.mean()) / y.std())


def _rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - truth) ** 2)))


def small_simulations(sizes: list[int], repetitions: int) -> list[dict[str, Any]]:
    """Test RMSE ratio to the CV-tuned SVR on small simulated sets (the evidence behind the small-sample rule)."""
    functions = {
        "linear-3d": (3, lambda X: 1 + X @ np.linspace(1.0, 0.2, 3)),
        "linear-6d": (6, lambda X: 1 + X @ np.linspace(1.0, 0.2, 6)),
        "sinc": (1, lambda X: np.sinc(1.5 * X[:, 0])),
    }
    scaled = {"noise_scaled_C": True}  # the (ε, σ) rules are compared with the penalty of eq. (5) throughout
    methods = {
        "first version": None,
        "descent, 5-fold": lambda seed: WorkingLikelihoodSVR(
            min_outside_count=0, small_sample_loo=False, random_state=seed, **scaled
        ),
        "descent + count, 5-fold": lambda seed: WorkingLikelihoodSVR(
            small_sample_loo=False, random_state=seed, **scaled
        ),
        "now: descent + count + LOO": lambda seed: WorkingLikelihoodSVR(random_state=seed, **scaled),
        "svr_default": lambda seed: METHODS["svr_default"](seed),
    }
    table = []
    for (function, (dim, f)), n, noise_fraction in itertools.product(functions.items(), sizes, (0.05, 0.3)):
        ratios: dict[str, list[float]] = {method: [] for method in methods}
        for rep in range(repetitions):
            rng = np.random.default_rng([zlib.crc32(f"{function}/{n}/{noise_fraction}".encode()), rep])
            X, X_test = rng.uniform(-1, 1, size=(n, dim)), rng.uniform(-1, 1, size=(500, dim))
            noise_sd = noise_fraction * np.std(f(rng.uniform(-1, 1, size=(5000, dim))))
            y = f(X) + rng.normal(scale=noise_sd, size=n)
            scaler = StandardScaler().fit(X)

            truth = f(X_test)
            reference = _rmse(METHODS["svr_cv_epsilon"](rep).fit(X, y).predict(X_test), truth)
            for method, make in methods.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SmallSampleWarning)
                    if make is None:
                        svr = first_version_predictor(scaler.transform(X), y, rep)
                        prediction = svr.predict(scaler.transform(X_test)) * y.std() + y.mean()
                    else:
                        prediction = make_pipeline(StandardScaler(), make(rep)).fit(X, y).predict(X_test)
                ratios[method].append(_rmse(prediction, truth) / reference)
        table.append(
            {"function": function, "n": n, "noise / signal sd": noise_fraction}
            | {method: round(float(np.mean(values)), 3) for method, values in ratios.items()}
        )
    table.append(
        {"function": "mean", "n": "", "noise / signal sd": ""}
        | {method: round(float(np.mean([line[method] for line in table])), 3) for method in methods}
    )
    return table


def gaussian_residuals(sizes: list[int], draws: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    table = []
    for n in sizes:
        for count in (0, MIN_OUTSIDE_COUNT):
            estimates = [fit_working_likelihood(rng.normal(size=n), MIN_OUTSIDE_FRACTION, count) for _ in range(draws)]
            epsilon = np.array([e.epsilon for e in estimates])
            table.append(
                {
                    "n": n,
                    "min_outside_count": count,
                    "median ε̂": round(float(np.median(epsilon)), 2),
                    "ε̂ IQR": f"{np.quantile(epsilon, 0.25):.2f}-{np.quantile(epsilon, 0.75):.2f}",
                    "at bound": round(float(np.mean([e.at_bound for e in estimates])), 2),
                    "median tube / sd": round(float(np.median([e.epsilon * e.sigma for e in estimates])), 2),
                }
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["longley", "stackloss"], choices=list(DATASETS))
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--sim-sizes", type=int, nargs="+", default=[12, 16, 30])
    parser.add_argument("--sim-repetitions", type=int, default=25)
    args = parser.parse_args()
    start = time.perf_counter()

    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    markdown = ""
    for name in args.datasets:
        records, logs = real_data(name, args.splits, args.iterations)
        tubes = np.array([[p["tube"] for p in r["path"]] for r in records])
        bound = np.array([[p["at_bound"] for p in r["path"]] for r in records])
        j_first_two = np.array([[r["path"][0]["J"], r["path"][1]["J"]] for r in records])
        line = {
            "data set": name,
            "n train": records[0]["n_train"],
            "tube it. 1": round(float(np.median(tubes[:, 0])), 3),
            "tube it. 3": round(float(np.median(tubes[:, 2])), 3),
            f"tube it. {args.iterations}": round(float(np.median(tubes[:, -1])), 3),
            "tube grows 1→3": round(float(np.mean(tubes[:, 2] > tubes[:, 0])), 2),
            "at bound it. 1": round(float(np.mean(bound[:, 0])), 2),
            "at bound it. 3": round(float(np.mean(bound[:, 2])), 2),
            "J rises 1→2": round(float(np.mean(j_first_two[:, 1] > j_first_two[:, 0])), 2),
            "same tube it. 5, 6": round(float(np.mean(np.isclose(tubes[:, -1], tubes[:, -2], rtol=1e-2))), 2),
            "n_iter now": f"{np.mean([r['n_iter'] for r in records]):.1f} ({max(r['n_iter'] for r in records)})",
            "tube now": round(float(np.median([r["tube_now"] for r in records])), 3),
        }
        summary.append(line)
        for key, value in line.items():
            if key in ("data set", "n train", "n_iter now"):
                continue
            rows.append(
                {
                    "dataset": name,
                    "method": "wl_svr",
                    "model": "svr-rbf",
                    "metric": key,
                    "mean": value,
                    "std": None,
                    "n": args.splits,
                    "extra": {"tubes_in": "standardised response (y / sd)"},
                }
            )
        markdown += f"\n### {name}: per-iteration log of the first 10 splits (tube εσ in sd units of y)\n\n"
        markdown += "\n".join(logs[:10]) + "\n"
    gaussian = gaussian_residuals([10, 12, 15, 20, 30, 50, 100, 400], args.draws)
    for line in gaussian:
        rows.append(
            {
                "dataset": f"gaussian-residuals-n{line['n']}",
                "method": "fit_working_likelihood",
                "model": "-",
                "metric": "median_epsilon_hat",
                "mean": line["median ε̂"],
                "std": None,
                "n": args.draws,
                "extra": {k: v for k, v in line.items() if k != "median ε̂"},
            }
        )
    simulations = small_simulations(args.sim_sizes, args.sim_repetitions)
    for line in simulations:
        for method in list(line)[3:]:
            rows.append(
                {
                    "dataset": f"small-sim-{line['function']}-n{line['n']}-noise{line['noise / signal sd']}",
                    "method": method,
                    "model": "svr-rbf",
                    "metric": "rmse_ratio_to_cv_mean",
                    "mean": line[method],
                    "std": None,
                    "n": args.sim_repetitions,
                    "extra": {"rmse_target": "noise-free function, 500 test points"},
                }
            )
    header = (
        f"Part 1: {args.splits} splits of svr_real.py, training rows only (standardised X); the first version's "
        f"fixed-point loop for {args.iterations} estimates (10% bound only), and the estimator as it is now "
        "(descent on J, eq. 6, with the small-sample rules: at least 5 residuals outside, leave-one-out "
        "residuals). Medians over splits; tubes in sd units of y.\n\n"
    )
    markdown = (
        header
        + markdown_table(summary, list(summary[0]))
        + markdown
        + f"\nPart 2: ε̂ on {args.draws} draws of n standard Gaussian residuals (population value ε = 1.53, "
        "tube 0.85 sd).\n\n"
        + markdown_table(gaussian, list(gaussian[0]))
        + f"\nPart 3: small simulated sets (x uniform on [-1, 1]^d, Gaussian noise with the given fraction of the "
        f"signal's sd, {args.sim_repetitions} repetitions); mean per-repetition test RMSE ratio to svr_cv_epsilon "
        "(RMSE against the noise-free function on 500 points). First version: three fixed-point estimates, 10% "
        "bound only.\n\n" + markdown_table(simulations, list(simulations[0]))
    )
    write_results(NAME, command_line(), rows, [], time.perf_counter() - start, markdown)


if __name__ == "__main__":
    main()
