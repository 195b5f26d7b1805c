"""Few-shot accuracy of the scikit-learn estimators on classes they never saw.

The protocol of a scikit-learn user: fit on the rows of some classes, then
`adapt` to a few labelled rows of new classes and score the other rows of
those classes. Beside every estimator, on the very same support sets: 1-NN,
logistic regression and the nearest class mean of the rows themselves. Two
data sets:

- digits (`sklearn.datasets.load_digits`, 8x8): fit on digits 0-5, adapt to
  4-way tasks of digits 6-9 and score the 694 rows left;
- Omniglot pixels as rows (14x14 = 196 features; `../shared/data/omniglot`,
  skipped when absent): fit on the 964 background characters, adapt to
  5-way tasks of the 659 evaluation characters, 15 rows scored per class.

Accuracy is the mean over `--draws` support draws with its 95% CI, and the
difference to 1-NN is paired (same draws). Each estimator is fitted once on
raw rows and once after `StandardScaler` (the pipeline scikit-learn users
write); the fit time is recorded.

Usage:
    python benchmarks/estimators.py --draws 100

Appends to benchmarks/results/estimators.csv and prints the table.
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from metakeras.datasets import omniglot  # noqa: E402
from metakeras.sklearn import MetaClassifier, adapt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "omniglot")

BASELINES = {
    "1-NN": lambda: KNeighborsClassifier(1),
    "logistic regression": lambda: LogisticRegression(max_iter=2000),
    "nearest class mean": NearestCentroid,
}


def digits():
    """Digits 0-5 to fit, 6-9 to adapt to."""
    x, y = load_digits(return_X_y=True)
    base = y < 6
    return x[base], y[base], x[~base], y[~base]


def omniglot_rows(path):
    """Omniglot background / evaluation characters as rows of 14x14 pixels."""
    (x_bg, y_bg), (x_ev, y_ev), _ = omniglot.load_data(path=path, image_size=14)
    return x_bg.reshape(len(x_bg), -1), y_bg, x_ev.reshape(len(x_ev), -1), y_ev


def draws(y, ways, shots, queries, count, seed):
    """Support and scored row indices of `count` seeded tasks."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(count):
        chosen = classes if ways >= len(classes) else rng.choice(classes, ways, False)
        support, scored = [], []
        for c in chosen:
            rows = rng.permutation(np.flatnonzero(y == c))
            support.append(rows[:shots])
            scored.append(rows[shots:] if queries is None else rows[shots:][:queries])
        yield np.concatenate(support), np.concatenate(scored)


def evaluate(name, data, estimators, settings, count, seed):
    x_fit, y_fit, x_new, y_new = data
    rows = []
    for ways, shots, queries in settings:
        tasks = list(draws(y_new, ways, shots, queries, count, seed))
        reference = None
        for label, make, scaled in estimators:
            model = make_pipeline(StandardScaler(), make()) if scaled else make()
            seconds = None
            if label not in BASELINES:
                start = time.perf_counter()
                model.fit(x_fit, y_fit)
                seconds = time.perf_counter() - start
            scores = []
            for support, scored in tasks:
                if label in BASELINES:
                    model.fit(x_new[support], y_new[support])
                else:
                    adapt(model, x_new[support], y_new[support])
                scores.append(model.score(x_new[scored], y_new[scored]))
            scores = np.array(scores)
            if reference is None:
                reference = scores
            difference = scores - reference
            rows.append(
                {
                    "data": name,
                    "task": f"{ways}-way {shots}-shot",
                    "model": label + (" (StandardScaler)" if scaled else ""),
                    "accuracy": scores.mean(),
                    "ci95": 1.96 * scores.std() / np.sqrt(len(scores)),
                    "vs_1nn": difference.mean(),
                    "vs_1nn_ci95": 1.96 * difference.std() / np.sqrt(len(scores)),
                    "fit_seconds": seconds,
                    "selected": getattr(
                        model[-1] if scaled else model, "selected_", None
                    ),
                    "draws": len(scores),
                }
            )
            print(
                f"{name:9s} {rows[-1]['task']:13s} {rows[-1]['model']:45s} "
                f"{rows[-1]['accuracy']:.3f} ± {rows[-1]['ci95']:.3f}  "
                f"vs 1-NN {rows[-1]['vs_1nn']:+.3f} ± {rows[-1]['vs_1nn_ci95']:.3f}"
                + (f"  fit {seconds:.1f} s" if seconds is not None else ""),
                flush=True,
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models",
        nargs="*",
        default=["MetaClassifier()"],
        help="estimators as Python expressions (MetaClassifier(...))",
    )
    parser.add_argument("--data", default=SHARED if os.path.isdir(SHARED) else None)
    _machine.add_arguments(parser)
    args = parser.parse_args(argv)
    machine = _machine.check_quiet(args)
    # NearestCentroid's within-class statistics (unused without shrinkage)
    # divide by zero on one-shot tasks, and LogisticRegression warns on its
    # solver's defaults; neither changes the predictions.
    for category in (RuntimeWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)

    def estimator(expression):
        return lambda: eval(
            expression, {"MetaClassifier": MetaClassifier, "random_state": args.seed}
        )

    estimators = [(label, make, False) for label, make in BASELINES.items()]
    estimators.append(("1-NN", BASELINES["1-NN"], True))
    for expression in args.models:
        estimators += [
            (expression, estimator(expression), False),
            (expression, estimator(expression), True),
        ]
    rows = evaluate(
        "digits",
        digits(),
        estimators,
        [(4, 5, None), (4, 1, None)],
        args.draws,
        args.seed,
    )
    if args.data is not None:
        rows += evaluate(
            "omniglot",
            omniglot_rows(args.data),
            estimators,
            [(5, 1, 15), (5, 5, 15)],
            args.draws,
            args.seed,
        )
    table = pd.DataFrame(rows)
    _machine.append(table, os.path.join(HERE, "results", "estimators.csv"), machine)


if __name__ == "__main__":
    main()
