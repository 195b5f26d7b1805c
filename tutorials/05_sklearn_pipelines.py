# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # 05 · Meta-learners as scikit-learn estimators
#
# Many people who have "many small related tasks" live in scikit-learn:
# their data are tables, their preprocessing is a `Pipeline`, their model
# selection is `GridSearchCV`. `metakeras.sklearn.MetaClassifier` and
# `MetaRegressor` bring meta-learning there without a single episode tensor:
#
# - `fit(X, y)` meta-trains on few-shot episodes drawn from the classes of
#   `y` (each episode: `ways` classes, `shots` support rows and `queries`
#   query rows per class, relabelled in random order), so the model learns
#   *how to learn a classification task from a few rows*; then it adapts to
#   the whole training set, so `predict` and `score` behave like any
#   classifier's and cross-validation just works.
# - `adapt(X_few, y_few)` adapts to a **new task**, with classes never seen
#   in `fit`, from a handful of rows; afterwards `predict`, `predict_proba`
#   and `score` refer to that task. `metakeras.sklearn.adapt(pipeline, X_few,
#   y_few)` does it for a whole pipeline.
#
# Model selection must then judge what few-shot learning is for: classes
# never trained on. scikit-learn's default folds keep every class on both
# sides, so they score ordinary classification of the training classes.
# `ClassSplit` holds out whole classes in every split, and its scorer adapts
# to a few labelled rows of each held-out class and scores the rest.
#
# Why a pipeline? Preprocessing must be fit on training rows only: inside a
# `Pipeline`, `GridSearchCV` refits it on every training split, so nothing
# leaks from the validation rows. Whether to scale at all is itself a choice
# to validate on unseen classes: a `StandardScaler` learns per-pixel
# statistics of the training digits, and a pixel almost constant in them
# becomes an extreme value for a new digit.
#
# Outputs (under `OUTPUT`): `grid_search.csv` (every hyper-parameter setting
# scored on unseen classes, and on the default same-class folds) and `new_classes.csv` (few-shot accuracy on digits
# never seen in meta-training).

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from metakeras.datasets import digits  # noqa: E402
from metakeras.sklearn import ClassSplit, MetaClassifier, adapt  # noqa: E402

# Budgets: about a minute on 2 CPU cores by default; METAKERAS_TUTORIAL_FULL=1
# for the longer run (10 epochs of 30 meta-batches per fit, 4 class splits);
# METAKERAS_TUTORIAL_FAST=1 for seconds (the tests).
FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
FULL = os.environ.get("METAKERAS_TUTORIAL_FULL") == "1"
OUTPUT = os.environ.get("METAKERAS_TUTORIAL_OUTPUT", "tutorial_output")
os.makedirs(OUTPUT, exist_ok=True)

# %% [markdown]
# ## Data: digits, split by class
#
# The 8x8 digits ship with scikit-learn (no download). Flattened, each image is
# a row of 64 features. Few-shot learning is judged on classes the model has
# never seen, so we meta-train on digits 0-5 and keep 6-9 for later.

# %%
x, y = digits.load_data()
X = x.reshape(len(x), -1)  # (1797, 64)
seen = y < 6
X_seen, y_seen = X[seen], y[seen]
X_new, y_new = X[~seen], y[~seen]
if FAST:  # a small sample keeps the fast run to a few seconds
    rows = np.random.default_rng(0).choice(len(X_seen), 300, replace=False)
    X_seen, y_seen = X_seen[rows], y_seen[rows]
print(f"meta-training rows: {len(X_seen)} of classes {np.unique(y_seen).tolist()}")

# %% [markdown]
# ## A pipeline in a grid search on unseen classes
#
# The default algorithm is ProtoNet: it embeds rows with a small MLP and
# classifies by distance to each class's mean embedding, so it adapts to any
# number of classes. We tune the number of support rows per meta-training
# episode (`shots`) and whether to scale the pixels (`scale`: a
# `StandardScaler` or none). The hyper-parameters are plain constructor
# arguments, so `meta__shots` reaches them through the pipeline as for any
# scikit-learn estimator; `random_state` makes each fit reproducible.
#
# Each candidate is scored on classes it never saw: every split of
# `ClassSplit(test_classes=3)` meta-trains on 3 of the digits 0-5 and holds
# out the other 3, and `cv.scorer()` adapts the fitted pipeline to `shots=5`
# labelled rows of each held-out digit (the same rows for every candidate)
# and scores the other rows of those digits: a 3-way task, chance 33%.

# %%
if FAST:
    budget = dict(epochs=1, steps_per_epoch=3, meta_batch_size=4)
elif FULL:
    budget = dict(epochs=10, steps_per_epoch=30, meta_batch_size=8)
else:
    budget = dict(epochs=3, steps_per_epoch=20, meta_batch_size=8)
pipeline = Pipeline(
    [
        ("scale", StandardScaler()),
        ("meta", MetaClassifier(ways=5, queries=5, random_state=0, **budget)),
    ]
)
grid = {"scale": [StandardScaler(), "passthrough"], "meta__shots": [1, 5]}
if FAST:
    grid = {"scale": [StandardScaler(), "passthrough"], "meta__shots": [5]}
cv = ClassSplit(n_splits=4 if FULL else 2, test_classes=3, shots=5, random_state=0)
search = GridSearchCV(pipeline, grid, cv=cv, scoring=cv.scorer())
search.fit(X_seen, y_seen)

print("best:", search.best_params_, f"3-way accuracy {search.best_score_:.3f}")

# %% [markdown]
# ## What the default folds would have said
#
# The same candidates, scored as `GridSearchCV` scores a classifier by
# default: stratified folds of the rows, every digit on both sides, and
# `score` classifying among the training digits. The two columns need not
# agree: the default folds reward a pipeline for classifying the digits it
# trained on, `ClassSplit` for adapting to digits it did not. On all ten
# digits (5 splits holding out 4 digits each, 5 shots, the estimator's
# default budget) ProtoNet scored 0.87 on unseen digits without a scaler,
# 0.79 with a `MinMaxScaler` and 0.66 with a `StandardScaler`, while
# stratified folds rated the three alike (0.95 to 0.97).

# %%
same_classes = StratifiedKFold(cv.get_n_splits(), shuffle=True, random_state=0)
results = pd.DataFrame(
    {
        "scale": [str(p["scale"]) for p in search.cv_results_["params"]],
        "shots": search.cv_results_["param_meta__shots"],
        "unseen_classes": search.cv_results_["mean_test_score"],
        "same_classes": [
            cross_val_score(
                clone(pipeline).set_params(**params), X_seen, y_seen, cv=same_classes
            ).mean()
            for params in search.cv_results_["params"]
        ],
    }
)
results.to_csv(os.path.join(OUTPUT, "grid_search.csv"), index=False)
print(results.to_string(index=False))

# %% [markdown]
# ## Adapting to classes never seen, beside the baselines
#
# `search.best_estimator_` is the pipeline refit on all of digits 0-5.
# `adapt(best, X_few, y_few)` adapts it to digits 6-9 from only `k` labelled
# rows per class: the scaler fit in meta-training transforms them and the
# last step adapts. `adapt` leaves the meta-learned weights alone, so we can
# adapt again with another `k`. The scores are 4-way accuracies on all the
# other rows of 6-9 (chance: 25%).
#
# A few-shot learner earns its place only if it beats what a scikit-learn
# user would try first on the same few rows: 1-NN and logistic regression
# fitted on the support rows alone. Beside them, `MetaClassifier()` with
# every default. Its `fit` holds out a fifth of the training classes
# (`validation_fraction=0.2`, at least 2) and adapts to few-shot tasks of
# them after meta-training: unless the meta-trained model beats a classifier
# of the rows themselves there (soft nearest neighbours: a Gaussian kernel
# over the support rows), by 5 points and beyond the 95% confidence
# interval, the estimator keeps that simpler classifier (`selected_` says
# which, `validation_scores_` what each scored). On digits, with only 6
# classes to learn from, no embedding we trained beat the raw pixels on new
# digits, and the check
# finds that out; over 100 support draws the kernel beats 1-NN on 5 shots
# (0.930 vs 0.923) and equals it on 1 shot (`benchmarks/estimators.py`). On
# Omniglot's 964 characters as rows the meta-trained model wins by 16 to 28
# points.

# %%
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

best = search.best_estimator_
default = MetaClassifier(random_state=0).fit(X_seen, y_seen)
print(
    f"defaults: kept {default.selected_!r}; on held-out digits "
    f"{default.validation_classes_.tolist()}: {default.validation_scores_}"
)
rng = np.random.default_rng(0)
rows = []
for k in (1, 5):
    support = np.concatenate(
        [rng.choice(np.flatnonzero(y_new == c), k, replace=False) for c in range(6, 10)]
    )
    query = np.setdiff1d(np.arange(len(y_new)), support)
    adapt(best, X_new[support], y_new[support])  # scaler, then the meta-learner
    default.adapt(X_new[support], y_new[support])
    scores = {
        "grid search best": best.score(X_new[query], y_new[query]),
        "MetaClassifier()": default.score(X_new[query], y_new[query]),
    }
    for name, baseline in [
        ("1-NN", KNeighborsClassifier(1)),
        ("logistic regression", LogisticRegression(max_iter=2000)),
    ]:
        baseline.fit(X_new[support], y_new[support])
        scores[name] = baseline.score(X_new[query], y_new[query])
    rows += [{"shots": k, "model": m, "accuracy": a} for m, a in scores.items()]
    print(f"{k}-shot on digits 6-9:", {m: round(a, 3) for m, a in scores.items()})
new_classes = pd.DataFrame(rows)
new_classes.to_csv(os.path.join(OUTPUT, "new_classes.csv"), index=False)
assert (new_classes["accuracy"] > 0.25).all(), new_classes  # above chance

# %% [markdown]
# ## What else works
#
# - `pickle`, `joblib` and `sklearn.base.clone` on fitted and unfitted
#   estimators (the Keras models inside are saved in Keras's own format).
# - `warm_start=True` or `partial_fit(X, y)` continue meta-training.
# - DataFrames in: `feature_names_in_` is recorded and checked like any
#   scikit-learn estimator's.
# - `algorithm="maml"` (or `"fomaml"`, `"metasgd"`, `"anil"`, `"reptile"`)
#   meta-learns an initialisation instead; its head has `ways` logits, so
#   set `ways` to at least the number of classes it must classify.
# - `MetaRegressor().fit(X, y, groups=task_ids)` meta-learns regression
#   tasks, drawing every episode's support and query rows from one group.
