"""`FewShotScorer`: scores by adapting to a few rows of each held-out task."""

import difflib

import numpy as np
from sklearn.base import is_regressor
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d

from metakeras._checks import is_int
from metakeras.sklearn.adaptation import _adapting_step, _detached, adapt

__all__ = ["FewShotScorer"]


class FewShotScorer:
    """Scores a meta-learner by adapting it to a few rows of each held-out task.

    `scorer(estimator, X, y)` draws `shots` support rows of every class of
    `y` (classification), adapts a copy of the fitted `estimator` to them
    (`adapt`: for a `Pipeline` the preceding steps transform and the last
    step adapts) and scores it on the other rows. With `groups` (the task
    label of every row, routed by scikit-learn's metadata routing) every
    task is scored on its own: `shots` rows of each of its classes, or for a
    regressor `shots` of its rows, to adapt on, the rest to score, and the
    scores are averaged over the tasks (each task weighs the same, the
    few-shot convention). A regressor needs `groups`: without them its test
    rows would be one mixed task.

    The estimator given is left as it was (a copy adapts), so the scorer can
    be one of several in a multi-metric `scoring` dict. It is a plain
    callable with the signature scikit-learn expects of a scorer; it
    requests `groups` for `score` in metadata routing, so with
    `sklearn.set_config(enable_metadata_routing=True)` a `params={"groups":
    groups}` passed to `cross_val_score` or `GridSearchCV.fit` reaches it
    (restricted to the test rows). Without routing it receives no `groups`.

    The support rows are a pure function of `random_state` and the rows
    given (`split_support`), so with an int every call on the same rows,
    hence every candidate of a grid search, adapts on the same support rows.
    `ClassSplit.scorer()` and `TaskSplit.scorer()` make one with their
    `shots` and a fixed seed.

    The parameters are checked when the scorer is made: it is not an
    estimator (never cloned), and an error raised while scoring becomes a
    NaN score and a warning under scikit-learn's default `error_score=
    np.nan`.

    Args:
        shots: labelled rows per class (classification) or per task
            (regression) to adapt on; every class or task needs at least
            `shots + 1` rows. Defaults to `1`.
        scoring: how to score the adapted estimator on the other rows:
            `None` (its `score`: accuracy, or R^2 for regressors), a name of
            `sklearn.metrics.get_scorer_names()` such as `"neg_log_loss"`,
            or a callable `scorer(estimator, X, y)`. Defaults to `None`.
        random_state: `None`, an int or a `numpy.random.RandomState` for
            drawing the support rows; `None` draws new ones at every call.
            Defaults to `None`.

    Raises:
        ValueError: for an invalid parameter (naming the valid choices).

    Example:

    ```python
    from sklearn.model_selection import cross_val_score
    from metakeras.sklearn import ClassSplit, FewShotScorer

    scorer = FewShotScorer(shots=5, scoring="accuracy", random_state=0)
    cross_val_score(clf, X, y, cv=ClassSplit(test_classes=4), scoring=scorer)
    ```
    """

    def __init__(self, shots=1, scoring=None, random_state=None):
        if not is_int(shots, 1):
            raise ValueError(
                f"FewShotScorer: `shots` must be an integer >= 1. Received: "
                f"shots={shots!r}"
            )
        _check_scoring(scoring)
        _check_random_state("FewShotScorer", random_state)
        self.shots = shots
        self.scoring = scoring
        self.random_state = random_state

    def __repr__(self):
        return (
            f"FewShotScorer(shots={self.shots!r}, scoring={self.scoring!r}, "
            f"random_state={self.random_state!r})"
        )

    def __call__(self, estimator, X, y, groups=None):
        final = _adapting_step(estimator)
        regression = is_regressor(final)
        if regression and groups is None:
            raise ValueError(
                f"FewShotScorer: scoring a regressor ({type(final).__name__}) needs "
                "`groups`, the task of every test row, to adapt to each held-out "
                "task on its own. Enable metadata routing "
                "(sklearn.set_config(enable_metadata_routing=True)) and pass "
                "params={'groups': groups} to cross_val_score, or groups=groups "
                "to GridSearchCV.fit."
            )
        metric = self._metric()
        scores = []
        for support, query in self.split_support(y, groups, per_class=not regression):
            adapted = adapt(
                _detached(estimator),
                _safe_indexing(X, support),
                _safe_indexing(y, support),
            )
            scores.append(
                metric(adapted, _safe_indexing(X, query), _safe_indexing(y, query))
            )
        return float(np.mean(scores))

    def _metric(self):
        if self.scoring is None:
            return lambda estimator, X, y: estimator.score(X, y)
        return check_scoring(scoring=self.scoring)

    def split_support(self, y, groups=None, per_class=True):
        """The support rows drawn for each task, and the rows left to score.

        Within each task (each label of `groups`, in sorted order; all rows
        when `groups` is `None`) it draws, without replacement, `shots` rows
        of every class of `y` in sorted order (`per_class=True`) or `shots`
        rows of the task (`per_class=False`), from a
        `sklearn.utils.check_random_state(random_state)` made once per call.

        Args:
            y: the rows' labels `(n_rows,)`; with `per_class=False` any
                targets with one row per entry.
            groups: task label of every row, `(n_rows,)`. Defaults to `None`
                (all rows are one task).
            per_class: draw `shots` rows of every class (classification)
                rather than of every task (regression). Defaults to `True`.

        Returns:
            A list of `(support, query)` pairs of sorted row indices, one
            pair per task: the rows to adapt on and the others of that task.

        Raises:
            ValueError: if a class (or a task) has fewer than `shots + 1`
                rows, naming it.

        Example:

        ```python
        scorer = FewShotScorer(shots=2, random_state=0)
        [(support, query)] = scorer.split_support([0, 0, 0, 1, 1, 1, 1])
        # support: two rows of class 0 and two of class 1; query: the rest.
        ```
        """
        n_rows = len(y)
        if groups is None:
            tasks = np.zeros(n_rows, dtype="int64")
        else:
            tasks = column_or_1d(np.asarray(groups))
            check_consistent_length(y, tasks)
        labels = None
        if per_class:
            labels = column_or_1d(np.asarray(y))
            check_classification_targets(labels)
        rng = check_random_state(self.random_state)
        task_labels, task_of_row, task_sizes = np.unique(
            tasks, return_inverse=True, return_counts=True
        )
        if not per_class:
            _check_sizes("FewShotScorer", task_labels, task_sizes, self.shots, "task")
        pairs = []
        for t, task in enumerate(task_labels):
            rows = np.flatnonzero(task_of_row == t)
            if per_class:
                where = "" if groups is None else f" of task {task.item()!r}"
                support = self._draw_per_class(rows, labels[rows], where, rng)
            else:
                support = rng.choice(rows, self.shots, replace=False)
            support = np.sort(support)
            pairs.append((support, np.setdiff1d(rows, support)))
        return pairs

    def _draw_per_class(self, rows, labels, where, rng):
        """`shots` of `rows` of every class of their `labels`, in class order."""
        classes, codes, counts = np.unique(
            labels, return_inverse=True, return_counts=True
        )
        _check_sizes("FewShotScorer", classes, counts, self.shots, "class", where)
        return np.concatenate(
            [
                rng.choice(rows[codes == c], self.shots, replace=False)
                for c in range(len(classes))
            ]
        )

    def get_metadata_routing(self):
        """The metadata this scorer requests: `groups` for `score`.

        Returns:
            A `sklearn.utils.metadata_routing.MetadataRequest`.

        Example:

        ```python
        FewShotScorer().get_metadata_routing()   # {'score': {'groups': True}}
        ```
        """
        request = MetadataRequest(owner=type(self).__name__)
        request.score.add_request(param="groups", alias=True)
        return request


def _check_scoring(scoring):
    if scoring is None or callable(scoring):
        if callable(scoring):
            check_scoring(scoring=scoring)  # refuses a metric given as a scorer
        return
    names = sorted(get_scorer_names())
    if isinstance(scoring, str) and scoring in names:
        return
    close = difflib.get_close_matches(str(scoring), names, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        "FewShotScorer: `scoring` must be None (the estimator's `score`), a name "
        "of sklearn.metrics.get_scorer_names() such as 'accuracy', "
        "'neg_log_loss' or 'neg_mean_squared_error', or a callable "
        f"scorer(estimator, X, y). Received: scoring={scoring!r}.{hint}"
    )


def _check_random_state(owner, random_state):
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return
    if is_int(random_state, 0):
        return
    raise ValueError(
        f"{owner}: `random_state` must be None, an integer >= 0 or a "
        f"numpy.random.RandomState. Received: random_state={random_state!r}"
    )


def _check_sizes(owner, labels, counts, shots, unit, where=""):
    """Raises unless every class or task has `shots + 1` rows, naming the few."""
    needed = shots + 1
    few = np.flatnonzero(counts < needed)
    if not few.size:
        return
    plural = "classes" if unit == "class" else "tasks"
    detail = ", ".join(
        f"{unit} {labels[i].item()!r} has {counts[i]} row{'s' if counts[i] != 1 else ''}"
        for i in few[:5]
    )
    raise ValueError(
        f"{owner}: shots={shots} needs at least shots + 1 = {needed} rows of every "
        f"held-out {unit}{where} ({shots} to adapt on, at least one to score), but "
        f"{few.size} {plural} have fewer: {detail}{' ...' if few.size > 5 else ''}. "
        f"Lower `shots`, or drop the small {plural}."
    )
