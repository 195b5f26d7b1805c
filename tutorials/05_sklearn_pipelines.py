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
#   and `score` refer to that task.
#
# Why a pipeline? Meta-learning is sensitive to feature scale like any neural
# network, and the scaler must be fit on training rows only: inside a
# `Pipeline`, `GridSearchCV` refits it on every training fold, so nothing
# leaks from the validation rows into the scaling.
#
# Outputs (under `OUTPUT`): `grid_search.csv` (cross-validated scores of every
# hyper-parameter setting) and `new_classes.csv` (few-shot accuracy on digits
# never seen in meta-training).

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # metakeras runs on PyTorch

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from metakeras.datasets import digits  # noqa: E402
from metakeras.sklearn import MetaClassifier  # noqa: E402

FAST = os.environ.get("METAKERAS_TUTORIAL_FAST") == "1"
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
# ## A pipeline in a grid search
#
# The default algorithm is ProtoNet: it embeds rows with a small MLP and
# classifies by distance to each class's mean embedding, so it adapts to any
# number of classes. We tune the number of support rows per meta-training
# episode (`shots`) and the width of the embedding. The hyper-parameters are
# plain constructor arguments, so `meta__shots` reaches them through the
# pipeline as for any scikit-learn estimator; `random_state` makes each fit
# reproducible.
#
# Each candidate is scored by 2-fold cross-validation: meta-train on one half
# of the rows, adapt to it, classify the other half.

# %%
budget = (
    dict(epochs=1, steps_per_epoch=3, meta_batch_size=4)
    if FAST
    else dict(epochs=10, steps_per_epoch=30, meta_batch_size=8)
)
pipeline = Pipeline(
    [
        ("scale", StandardScaler()),
        ("meta", MetaClassifier(ways=5, queries=5, random_state=0, **budget)),
    ]
)
grid = {"meta__shots": [1, 5], "meta__hidden_units": [(32,), (64, 64)]}
if FAST:
    grid = {"meta__shots": [1, 5], "meta__hidden_units": [(32,)]}
search = GridSearchCV(
    pipeline, grid, cv=StratifiedKFold(2, shuffle=True, random_state=0)
)
search.fit(X_seen, y_seen)

results = pd.DataFrame(search.cv_results_)[
    ["param_meta__shots", "param_meta__hidden_units", "mean_test_score"]
]
results.to_csv(os.path.join(OUTPUT, "grid_search.csv"), index=False)
print(results.to_string(index=False))
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")

# %% [markdown]
# ## Adapting to classes never seen
#
# `search.best_estimator_` is the pipeline refit on all of digits 0-5. Its
# last step adapts to digits 6-9 from only `k` labelled rows per class; the
# scaler is the one fit in meta-training (the new rows go through
# `pipeline[:-1].transform`). `adapt` leaves the meta-learned weights alone,
# so we can adapt again with another `k`. The scores are 4-way accuracies on
# all the other rows of 6-9 (chance: 25%).

# %%
best = search.best_estimator_
scaler, meta = best[:-1], best[-1]
rng = np.random.default_rng(0)
rows = []
for k in (1, 5):
    support = np.concatenate(
        [rng.choice(np.flatnonzero(y_new == c), k, replace=False) for c in range(6, 10)]
    )
    query = np.setdiff1d(np.arange(len(y_new)), support)
    meta.adapt(scaler.transform(X_new[support]), y_new[support])
    accuracy = best.score(X_new[query], y_new[query])  # scaler + adapted model
    rows.append(
        {"shots": k, "classes": str(meta.classes_.tolist()), "accuracy": accuracy}
    )
    print(f"{k}-shot on digits 6-9: accuracy {accuracy:.3f}")
pd.DataFrame(rows).to_csv(os.path.join(OUTPUT, "new_classes.csv"), index=False)
assert all(row["accuracy"] > 0.25 for row in rows), rows  # above chance

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
