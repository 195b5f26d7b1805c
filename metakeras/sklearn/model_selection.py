"""Cross-validation on classes and tasks that meta-training never saw.

Few-shot learners are judged on new tasks: adapt to a few labelled rows of
classes (or tasks) absent from training, then predict the other rows.
`MetaClassifier.fit` ends by adapting to its training classes, so
scikit-learn's own splitters score held-out rows of the *same* classes.
`ClassSplit` (classes of `y`) and `TaskSplit` (tasks named by `groups`)
hold out whole classes or tasks; their `scorer()` (a
`metakeras.sklearn.FewShotScorer`) adapts to a few rows of each and scores
the rest.
"""

import math

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils.metadata_routing import UNUSED
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d

from metakeras._checks import is_int, is_number
from metakeras.sklearn.scoring import FewShotScorer, _check_random_state, _check_sizes

__all__ = ["ClassSplit", "TaskSplit"]


class _HeldOutSplit(BaseCrossValidator):
    """Splits that hold out whole units of rows: classes of `y`, or tasks.

    Subclasses name the unit (`_unit`, `_units`), the parameter of the
    number held out (`_size_param`), the fewest units a test and a training
    side may hold (`_min_test`, `_min_train`) and the unit of every row
    (`_unit_labels`).
    """

    _unit = _units = _size_param = None
    _min_test = _min_train = 1

    def get_n_splits(self, X=None, y=None, groups=None):
        """The number of splits, `n_splits`.

        Args:
            X: ignored, for compatibility. Defaults to `None`.
            y: ignored, for compatibility. Defaults to `None`.
            groups: ignored, for compatibility. Defaults to `None`.

        Returns:
            `n_splits`, an int.

        Example:

        ```python
        ClassSplit(n_splits=3).get_n_splits()   # 3
        ```
        """
        self._check_params()
        return int(self.n_splits)

    def split(self, X, y=None, groups=None):
        """Train and test row indices of every split, the test rows' units held out.

        Args:
            X: array-like, `(n_samples, n_features)`: the rows.
            y: targets, `(n_samples,)`. Defaults to `None`.
            groups: task label of every row, `(n_samples,)`. Defaults to
                `None`.

        Yields:
            `(train, test)` pairs of sorted index arrays; no class (or task)
            has rows on both sides.

        Raises:
            ValueError: for invalid parameters, too few classes (tasks) for
                the splits asked for, or a class (task) with fewer than
                `shots + 1` rows.

        Example:

        ```python
        for train, test in ClassSplit(n_splits=2, random_state=0).split(X, y):
            assert not set(y[train]) & set(y[test])
        ```
        """
        self._check_params()
        labels = self._unit_labels(X, y, groups)
        units, codes, counts = np.unique(
            labels, return_inverse=True, return_counts=True
        )
        _check_sizes(type(self).__name__, units, counts, self.shots, self._unit)
        n_test = self._n_test(len(units))
        rng = check_random_state(self.random_state)
        for held_out in self._held_out_units(len(units), n_test, rng):
            test = np.isin(codes, held_out)
            yield np.flatnonzero(~test), np.flatnonzero(test)

    def scorer(self, scoring=None):
        """The `FewShotScorer` of this split: its `shots`, a fixed seed.

        The seed is `random_state` when that is an int, else drawn from it
        once now, so that every call of the scorer (every candidate of a
        grid search) adapts on the same support rows.

        Args:
            scoring: `None` (the adapted estimator's `score`), a scorer name
                or a callable `scorer(estimator, X, y)`, as for
                `FewShotScorer`. Defaults to `None`.

        Returns:
            A `FewShotScorer`.

        Example:

        ```python
        cv = ClassSplit(test_classes=4, shots=5, random_state=0)
        cross_val_score(clf, X, y, cv=cv, scoring=cv.scorer("neg_log_loss"))
        ```
        """
        self._check_params()
        seed = self.random_state
        if not is_int(seed, 0):
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        return FewShotScorer(shots=self.shots, scoring=scoring, random_state=seed)

    def _check_params(self):
        name = type(self).__name__
        size = getattr(self, self._size_param)
        fewest = 2 if size is None else 1
        if not is_int(self.n_splits, fewest):
            folds = f" (folds of the {self._units})" if size is None else ""
            raise ValueError(
                f"{name}: `n_splits` must be an integer >= {fewest}{folds}. "
                f"Received: n_splits={self.n_splits!r}"
            )
        fraction = not is_int(size) and is_number(size, positive=True) and size < 1
        if not (size is None or fraction or is_int(size, self._min_test)):
            raise ValueError(
                f"{name}: `{self._size_param}` must be None (every {self._unit} "
                f"held out once, in n_splits folds), an integer >= {self._min_test} "
                f"({self._units} held out per split) or a float in (0, 1) (their "
                f"fraction). Received: {self._size_param}={size!r}"
            )
        if not is_int(self.shots, 1):
            raise ValueError(
                f"{name}: `shots` must be an integer >= 1. Received: shots={self.shots!r}"
            )
        _check_random_state(name, self.random_state)

    def _n_test(self, n_units):
        """Units held out per split (`None`: folds), checked against `n_units`."""
        name, param = type(self).__name__, self._size_param
        size = getattr(self, param)
        least, most = self._min_test, n_units - self._min_train
        if size is None:
            folds = [k for k in range(2, n_units + 1) if self._folds_fit(n_units, k)]
            if int(self.n_splits) not in folds:
                way_out = (
                    f"use n_splits <= {max(folds)} or set `{param}`"
                    if folds
                    else f"the data needs more {self._units}"
                )
                raise ValueError(
                    f"{name}: the {n_units} {self._units} cannot be dealt into "
                    f"n_splits={self.n_splits} folds of at least {least} "
                    f"{self._units} with {self._min_train} left to train on; "
                    f"{way_out}."
                )
            return None
        n_test = size if is_int(size, 0) else math.ceil(size * n_units)
        if not least <= n_test <= most:
            raise ValueError(
                f"{name}: {param}={size!r} holds out {n_test} of the {n_units} "
                f"{self._units}, but a split must hold out at least {least} and "
                f"leave at least {self._min_train} to train on"
                + (f" ({least} to {most} {self._units})." if least <= most else ".")
            )
        return int(n_test)

    def _folds_fit(self, n_units, k):
        return (
            n_units // k >= self._min_test
            and n_units - math.ceil(n_units / k) >= self._min_train
        )

    def _held_out_units(self, n_units, n_test, rng):
        if n_test is None:
            order = rng.permutation(n_units)
            for fold in np.array_split(order, int(self.n_splits)):
                yield np.sort(fold)
            return
        for _ in range(int(self.n_splits)):
            yield np.sort(rng.permutation(n_units)[:n_test])

    def _unit_labels(self, X, y, groups):
        raise NotImplementedError


class ClassSplit(_HeldOutSplit):
    """Cross-validation on unseen classes: the test rows' classes are not trained on.

    Few-shot classifiers are judged on new classes. `MetaClassifier.fit`
    ends by adapting to its training classes, so the folds of
    `StratifiedKFold` (what `cross_val_score` and `GridSearchCV` use for a
    classifier by default) score held-out rows of the classes it was
    trained on: ordinary classification. The train indices of a
    `ClassSplit` hold some classes of `y`, its test indices every row of
    the others, and its scorer (`scorer()`, a `FewShotScorer`) adapts the
    estimator fit on the train rows to `shots` labelled rows of each
    held-out class, drawn reproducibly, then scores it on the remaining rows
    of those classes:

    ```python
    cv = ClassSplit(n_splits=5, test_classes=4, shots=5, random_state=0)
    cross_val_score(clf, X, y, cv=cv, scoring=cv.scorer())
    ```

    The held-out classes are chosen as by scikit-learn's group splitters:

    - `test_classes=None` (as `GroupKFold`): the classes, shuffled with
      `random_state`, are dealt into `n_splits` folds, and each split holds
      out one fold: every class is held out exactly once.
    - `test_classes` an int, or a float in (0, 1) (as `GroupShuffleSplit`'s
      `test_size`): each split draws that many classes (that fraction,
      rounded up), independently of the other splits.

    A split holds out at least 2 classes (a task to adapt to) and leaves at
    least 2 to train on, and every class needs `shots + 1` rows (any class
    may be held out: `shots` to adapt on, one or more to score); `split`
    checks both before anything is fit. Gradient-based algorithms (all but
    protonet) adapt to at most `ways` classes, so keep the held-out classes
    per split at most the estimator's `ways`. `groups` is ignored.

    Why a splitter that makes its scorer: the protocol has two halves,
    which classes are held out (the split) and which of their rows are
    revealed to adapt on (the scoring), and scikit-learn hands a scorer the
    test rows, never their indices, so the scorer draws the support rows
    itself. `scorer()` gives it this split's `shots` and seed, so the two
    halves cannot disagree, and the split checks `shots` first, where an
    error stops the search (an error raised while scoring only becomes a
    NaN score and a warning under the default `error_score=np.nan`).

    Args:
        n_splits: the number of splits; with `test_classes=None`, the
            number of folds of the classes (at least 2). Defaults to `5`.
        test_classes: `None` (folds), an int >= 2 (classes held out per
            split) or a float in (0, 1) (their fraction of the classes).
            Defaults to `None`.
        shots: labelled rows per held-out class that the scorer adapts on.
            Defaults to `1`.
        random_state: `None`, an int or a `numpy.random.RandomState`; it
            shuffles or draws the classes, and seeds the scorer. With an int
            every `split` gives the same splits. Defaults to `None`.

    Example:

    ```python
    import metakeras
    from sklearn.model_selection import cross_val_score
    from metakeras.sklearn import ClassSplit, MetaClassifier

    x, y = metakeras.datasets.digits.load_data()
    X = x.reshape(len(x), -1)
    cv = ClassSplit(n_splits=3, test_classes=4, shots=5, random_state=0)
    clf = MetaClassifier(ways=5, shots=5, epochs=5, random_state=0)
    scores = cross_val_score(clf, X, y, cv=cv, scoring=cv.scorer())
    ```
    """

    __metadata_request__split = {"groups": UNUSED}
    _unit, _units, _size_param = "class", "classes", "test_classes"
    _min_test = _min_train = 2

    def __init__(self, n_splits=5, test_classes=None, shots=1, random_state=None):
        self.n_splits = n_splits
        self.test_classes = test_classes
        self.shots = shots
        self.random_state = random_state

    def _unit_labels(self, X, y, groups):
        if y is None:
            raise ValueError(
                "ClassSplit: `y` must be given; the split holds out classes of `y`."
            )
        y = column_or_1d(np.asarray(y))
        check_consistent_length(X, y)
        check_classification_targets(y)
        return y


class TaskSplit(_HeldOutSplit):
    """Cross-validation on unseen tasks: the test rows' tasks are not trained on.

    The regression counterpart of `ClassSplit`. `groups` names the task of
    every row (a user, a site, a sinusoid), as for `MetaRegressor.fit(X, y,
    groups=...)`; the train indices hold some tasks, the test indices every
    row of the others. Its scorer (`scorer()`, a `FewShotScorer`) adapts the
    fitted estimator to `shots` rows of each held-out task, one task at a
    time, scores it on that task's other rows and averages over the tasks.

    The scorer needs the test rows' `groups`, which scikit-learn passes to a
    scorer only through metadata routing: enable it, let the estimator
    request `groups` in `fit`, and pass them as `params`:

    ```python
    sklearn.set_config(enable_metadata_routing=True)
    reg = MetaRegressor(shots=5).set_fit_request(groups=True)
    cv = TaskSplit(n_splits=3, test_tasks=0.2, shots=5, random_state=0)
    cross_val_score(reg, X, y, cv=cv, scoring=cv.scorer(), params={"groups": groups})
    ```

    As for `ClassSplit`, `test_tasks=None` deals the shuffled tasks into
    `n_splits` folds (as `GroupKFold`), and an int or a fraction draws that
    many tasks per split (as `GroupShuffleSplit`). A split holds out at
    least one task and leaves one to train on; every task needs `shots + 1`
    rows (with the default R^2 score, `shots + 2`, since R^2 needs two rows).

    Args:
        n_splits: the number of splits; with `test_tasks=None`, the number
            of folds of the tasks (at least 2). Defaults to `5`.
        test_tasks: `None` (folds), an int >= 1 (tasks held out per split)
            or a float in (0, 1) (their fraction of the tasks). Defaults to
            `None`.
        shots: rows per held-out task that the scorer adapts on. Defaults
            to `5`.
        random_state: `None`, an int or a `numpy.random.RandomState`; it
            shuffles or draws the tasks, and seeds the scorer. Defaults to
            `None`.

    Example:

    ```python
    import numpy as np
    import sklearn
    from sklearn.model_selection import cross_val_score
    from metakeras.sklearn import MetaRegressor, TaskSplit

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 20)             # 40 tasks of 20 rows
    X = rng.uniform(-5, 5, size=(800, 1))
    y = rng.uniform(0.1, 5, 40)[groups] * np.sin(X[:, 0] - rng.uniform(0, 3, 40)[groups])
    sklearn.set_config(enable_metadata_routing=True)
    reg = MetaRegressor(shots=5, epochs=5, random_state=0).set_fit_request(groups=True)
    cv = TaskSplit(n_splits=3, test_tasks=8, shots=5, random_state=0)
    scores = cross_val_score(
        reg, X, y, cv=cv, scoring=cv.scorer("neg_mean_squared_error"),
        params={"groups": groups},
    )
    sklearn.set_config(enable_metadata_routing=False)
    ```
    """

    __metadata_request__split = {"groups": True}
    _unit, _units, _size_param = "task", "tasks", "test_tasks"

    def __init__(self, n_splits=5, test_tasks=None, shots=5, random_state=None):
        self.n_splits = n_splits
        self.test_tasks = test_tasks
        self.shots = shots
        self.random_state = random_state

    def _unit_labels(self, X, y, groups):
        if groups is None:
            raise ValueError(
                "TaskSplit: `groups`, the task of every row, must be given: "
                "cross_val_score(..., groups=groups), or params={'groups': groups} "
                "with metadata routing enabled."
            )
        groups = column_or_1d(np.asarray(groups))
        check_consistent_length(X, groups)
        return groups
