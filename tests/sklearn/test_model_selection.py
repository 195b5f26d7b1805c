"""Model selection on unseen classes and tasks: `ClassSplit`, `TaskSplit`,
`FewShotScorer` and `adapt`, through scikit-learn's own `cross_val_score`,
`cross_validate`, `GridSearchCV` and `Pipeline`."""

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn_helpers import _sinusoid_rows

from metakeras.sklearn import (
    ClassSplit,
    FewShotScorer,
    MetaClassifier,
    MetaRegressor,
    TaskSplit,
    adapt,
)

FAST = dict(ways=5, shots=5, epochs=2, steps_per_epoch=5, random_state=0)


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


def _by_hand(estimator, X, y, cv, scorer):
    """Per split: fit on the train classes, adapt on the scorer's support
    rows of the held-out classes, accuracy on their other rows."""
    scores = []
    for train, test in cv.split(X, y):
        fitted = clone(estimator).fit(X[train], y[train])
        [(support, query)] = scorer.split_support(y[test])
        X_test, y_test = X[test], y[test]
        adapt(fitted, X_test[support], y_test[support])
        scores.append(accuracy_score(y_test[query], fitted.predict(X_test[query])))
    return np.array(scores)


# ------------------------------------------------------------ ClassSplit


def test_class_split_holds_out_whole_classes(digits):
    X, y = digits
    folds = ClassSplit(n_splits=5, random_state=0)
    assert folds.get_n_splits() == 5
    held_out = []
    for train, test in folds.split(X, y):
        assert not set(y[train]) & set(y[test])
        assert len(np.unique(y[test])) == 2
        np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(len(y)))
        held_out += np.unique(y[test]).tolist()
    assert sorted(held_out) == list(range(10))  # every class held out once
    drawn = ClassSplit(n_splits=4, test_classes=4, random_state=0)
    splits = list(drawn.split(X, y))
    assert len(splits) == 4
    for train, test in splits:
        assert not set(y[train]) & set(y[test])
        assert len(np.unique(y[test])) == 4 and len(np.unique(y[train])) == 6
    assert len({tuple(np.unique(y[test])) for _, test in splits}) > 1
    # An int seed repeats the splits; another seed changes them.
    for (a, b), (c, d) in zip(splits, drawn.split(X, y)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    other = next(ClassSplit(n_splits=4, test_classes=4, random_state=1).split(X, y))
    assert not np.array_equal(other[1], splits[0][1])
    fraction = ClassSplit(n_splits=2, test_classes=0.25, random_state=0)
    assert len(np.unique(y[next(fraction.split(X, y))[1]])) == 3  # ceil(2.5)
    state = np.random.RandomState(0)
    assert len(list(ClassSplit(test_classes=3, random_state=state).split(X, y))) == 5
    assert "test_classes=4" in repr(drawn)
    # Under metadata routing `groups` may be passed: ClassSplit ignores them,
    # TaskSplit asks for them.
    assert drawn.get_metadata_routing().consumes("split", ["groups"]) == set()
    assert TaskSplit().get_metadata_routing().consumes("split", ["groups"]) == {
        "groups"
    }


def test_class_split_errors_name_the_value_and_the_choices(digits):
    X, y = digits
    for params, message in (
        (
            dict(n_splits=1),
            r"`n_splits` must be an integer >= 2 \(folds of the classes\)",
        ),
        (
            dict(n_splits=0, test_classes=3),
            r"`n_splits` must be an integer >= 1.*n_splits=0",
        ),
        (
            dict(test_classes=1),
            r"`test_classes` must be None .* integer >= 2 .*test_classes=1",
        ),
        (dict(test_classes=1.5), r"float in \(0, 1\).*test_classes=1.5"),
        (dict(test_classes="4"), r"test_classes='4'"),
        (dict(shots=0), r"`shots` must be an integer >= 1. Received: shots=0"),
        (dict(random_state="a"), r"`random_state` must be None, an integer.*'a'"),
    ):
        splitter = ClassSplit(**params)  # __init__ only stores
        assert all(getattr(splitter, k) == v for k, v in params.items())
        with pytest.raises(ValueError, match=message):
            next(splitter.split(X, y))
        with pytest.raises(ValueError, match=message):
            splitter.scorer()
    with pytest.raises(
        ValueError, match=r"10 classes cannot be dealt into n_splits=6.*n_splits <= 5"
    ):
        next(ClassSplit(n_splits=6).split(X, y))
    with pytest.raises(
        ValueError, match=r"test_classes=9 holds out 9 of the 10.*\(2 to 8 classes\)"
    ):
        next(ClassSplit(test_classes=9).split(X, y))
    few = np.r_[np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:4]]
    with pytest.raises(
        ValueError,
        match=r"shots=5 needs at least shots \+ 1 = 6 rows.*class 3 has 4 rows",
    ):
        next(ClassSplit(shots=5).split(X[few], y[few]))
    with pytest.raises(ValueError, match="`y` must be given"):
        next(ClassSplit().split(X))
    with pytest.raises(ValueError, match="Unknown label type"):
        next(ClassSplit().split(X, np.linspace(0, 1, len(X))))


# ---------------------------------------------- scoring on unseen classes


def test_cross_val_score_adapts_to_held_out_classes_as_by_hand(digits):
    X, y = digits
    clf = MetaClassifier(**FAST)
    cv = ClassSplit(n_splits=3, test_classes=4, shots=5, random_state=0)
    scorer = cv.scorer()
    assert scorer.shots == 5 and scorer.random_state == 0
    scores = cross_val_score(clf, X, y, cv=cv, scoring=scorer)
    np.testing.assert_allclose(scores, _by_hand(clf, X, y, cv, scorer), rtol=1e-12)
    assert scores.min() > 0.5  # 4-way: chance is 0.25
    # Deterministic with random_state.
    again = cross_val_score(clf, X, y, cv=cv, scoring=cv.scorer())
    np.testing.assert_array_equal(scores, again)
    # The support rows: 5 of each held-out class, drawn with the seed.
    _, test = next(cv.split(X, y))
    [(support, query)] = scorer.split_support(y[test])
    classes, counts = np.unique(y[test][support], return_counts=True)
    np.testing.assert_array_equal(classes, np.unique(y[test]))
    assert set(counts) == {5}
    np.testing.assert_array_equal(np.sort(np.r_[support, query]), np.arange(len(test)))
    rng = np.random.RandomState(0)
    expected = [
        rng.choice(np.flatnonzero(y[test] == c), 5, replace=False) for c in classes
    ]
    np.testing.assert_array_equal(support, np.sort(np.concatenate(expected)))


def test_scorer_leaves_the_estimator_alone_and_scores_tasks_by_groups(digits):
    X, y = digits
    train, test = next(
        ClassSplit(n_splits=2, test_classes=4, random_state=0).split(X, y)
    )
    clf = MetaClassifier(**FAST).fit(X[train], y[train])
    trained_classes = clf.classes_.copy()
    scorer = FewShotScorer(shots=3, random_state=0)
    score = scorer(clf, X[test], y[test])
    np.testing.assert_array_equal(clf.classes_, trained_classes)  # not adapted
    assert 0.25 < score <= 1.0
    # With groups, each task (two held-out classes) is adapted to on its own
    # and the scores are averaged.
    classes = np.unique(y[test])
    groups = np.where(np.isin(y[test], classes[:2]), "first", "second")
    by_task = scorer(clf, X[test], y[test], groups=groups)
    expected = []
    for support, query in scorer.split_support(y[test], groups):
        assert len(np.unique(groups[np.r_[support, query]])) == 1
        fitted = adapt(clf, X[test][support], y[test][support])
        assert len(fitted.classes_) == 2
        expected.append(fitted.score(X[test][query], y[test][query]))
    assert by_task == pytest.approx(np.mean(expected), rel=1e-12)
    log_loss = FewShotScorer(shots=3, scoring="neg_log_loss", random_state=0)
    assert log_loss(clf, X[test], y[test]) < 0


def test_pipelines_in_cross_val_score_and_grid_search(digits):
    X, y = digits
    pipe = Pipeline([("scale", MinMaxScaler()), ("meta", MetaClassifier(**FAST))])
    cv = ClassSplit(n_splits=2, test_classes=4, shots=5, random_state=0)
    scorer = cv.scorer()
    scores = cross_val_score(pipe, X, y, cv=cv, scoring=scorer)
    np.testing.assert_allclose(scores, _by_hand(pipe, X, y, cv, scorer), rtol=1e-12)
    grid = {"meta__shots": [1, 5]}
    search = GridSearchCV(pipe, grid, cv=cv, scoring=scorer).fit(X, y)
    assert search.best_params_["meta__shots"] in (1, 5)
    five = search.cv_results_["params"].index({"meta__shots": 5})
    for split in range(2):
        assert search.cv_results_[f"split{split}_test_score"][five] == scores[split]
    # Several metrics at once: each scorer adapts its own copy.
    results = cross_validate(
        pipe,
        X,
        y,
        cv=cv,
        scoring={"accuracy": scorer, "nll": cv.scorer("neg_log_loss")},
    )
    np.testing.assert_array_equal(results["test_accuracy"], scores)
    assert (results["test_nll"] < 0).all()


def test_adapt_runs_the_pipeline_steps_then_adapts_the_last(digits):
    X, y = digits
    seen = y < 6
    pipe = make_pipeline(StandardScaler(), MetaClassifier(**FAST)).fit(X[seen], y[seen])
    few = np.concatenate([np.flatnonzero(y == c)[:5] for c in (6, 7, 8)])
    assert adapt(pipe, X[few], y[few]) is pipe
    np.testing.assert_array_equal(pipe.classes_, [6, 7, 8])
    by_hand = clone(pipe[-1]).fit(pipe[0].transform(X[seen]), y[seen])
    by_hand.adapt(pipe[0].transform(X[few]), y[few])
    np.testing.assert_allclose(
        pipe.predict_proba(X[~seen]), by_hand.predict_proba(pipe[0].transform(X[~seen]))
    )
    nested = Pipeline(
        [
            ("none", "passthrough"),
            ("inner", make_pipeline(StandardScaler(), MetaClassifier(**FAST))),
        ]
    ).fit(X[seen], y[seen])
    np.testing.assert_array_equal(adapt(nested, X[few], y[few]).classes_, [6, 7, 8])
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    with pytest.raises(
        TypeError, match=r"pipeline's last step, LogisticRegression\(\), has no `adapt`"
    ):
        adapt(plain, X[few], y[few])
    with pytest.raises(
        TypeError, match=r"the estimator, LogisticRegression\(\), has no `adapt`"
    ):
        adapt(LogisticRegression(), X[few], y[few])
    with pytest.raises(TypeError, match="has no `adapt`"):
        FewShotScorer()(plain, X[few], y[few])


def test_few_shot_scorer_checks_its_parameters_and_the_rows(digits):
    X, y = digits
    with pytest.raises(
        ValueError, match=r"`shots` must be an integer >= 1. Received: shots=0"
    ):
        FewShotScorer(shots=0)
    with pytest.raises(
        ValueError, match=r"scoring='acuracy'.*Did you mean \['accuracy'"
    ):
        FewShotScorer(scoring="acuracy")
    with pytest.raises(ValueError, match="looks like it is a metric function"):
        FewShotScorer(scoring=accuracy_score)
    with pytest.raises(ValueError, match=r"random_state=-1"):
        FewShotScorer(random_state=-1)
    scorer = FewShotScorer(shots=2, random_state=0)
    assert repr(scorer) == "FewShotScorer(shots=2, scoring=None, random_state=0)"
    assert scorer.get_metadata_routing().consumes("score", ["groups"]) == {"groups"}
    [(support, query)] = scorer.split_support(["a", "a", "a", "b", "b", "b", "b"])
    assert len(support) == 4 and len(query) == 3
    [(again, _)] = scorer.split_support(["a", "a", "a", "b", "b", "b", "b"])
    np.testing.assert_array_equal(support, again)
    with pytest.raises(ValueError, match=r"shots \+ 1 = 3 rows.*class 'b' has 2 rows"):
        scorer.split_support(["a", "a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"of task 1.*class 'b' has 1 row\b"):
        scorer.split_support(["a"] * 3 + ["b"] * 4, groups=[0, 0, 0, 0, 0, 0, 1])
    pairs = scorer.split_support(
        np.zeros(9), groups=[0, 0, 0, 1, 1, 1, 2, 2, 2], per_class=False
    )
    assert [len(s) for s, _ in pairs] == [2, 2, 2] and [len(q) for _, q in pairs] == [
        1,
        1,
        1,
    ]
    with pytest.raises(ValueError, match=r"task 2 has 2 rows"):
        scorer.split_support(
            np.zeros(8), groups=[0, 0, 0, 1, 1, 1, 2, 2], per_class=False
        )


# ------------------------------------------------------------- regression


def test_task_split_and_scorer_for_regression():
    X, y, groups = _sinusoid_rows(tasks=24, rows=12, seed=0)
    cv = TaskSplit(n_splits=2, test_tasks=6, shots=4, random_state=0)
    for train, test in cv.split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
        assert len(np.unique(groups[test])) == 6
    reg = MetaRegressor(shots=4, epochs=2, steps_per_epoch=5, random_state=0)
    scorer = cv.scorer("neg_mean_squared_error")
    sklearn.set_config(enable_metadata_routing=True)
    try:
        routed = clone(reg).set_fit_request(groups=True)
        scores = cross_val_score(
            routed, X, y, cv=cv, scoring=scorer, params={"groups": groups}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            search = GridSearchCV(
                routed, {"inner_learning_rate": [0.01, 0.05]}, cv=cv, scoring=scorer
            ).fit(X, y, groups=groups)
    finally:
        sklearn.set_config(enable_metadata_routing=False)
    assert search.best_estimator_.n_groups_ == 24
    expected = []
    for train, test in cv.split(X, y, groups):
        fitted = clone(reg).fit(X[train], y[train], groups=groups[train])
        errors = []
        for support, query in scorer.split_support(
            y[test], groups[test], per_class=False
        ):
            assert len(support) == 4 and len(np.unique(groups[test][query])) == 1
            adapt(fitted, X[test][support], y[test][support])
            errors.append(
                -np.mean((fitted.predict(X[test][query]) - y[test][query]) ** 2)
            )
        expected.append(np.mean(errors))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    # Without routing the scorer gets no groups, and says how to pass them.
    fitted = clone(reg).fit(X, y, groups=groups)
    with pytest.raises(
        ValueError, match=r"needs `groups`.*enable_metadata_routing=True"
    ):
        scorer(fitted, X, y)
    with pytest.raises(
        ValueError, match="`groups`, the task of every row, must be given"
    ):
        next(cv.split(X, y))
    with pytest.raises(
        ValueError, match=r"`test_tasks` must be None .*integer >= 1.*test_tasks=0"
    ):
        next(TaskSplit(test_tasks=0).split(X, y, groups))
    with pytest.raises(ValueError, match=r"shots=12 .* task 0 has 12 rows"):
        next(TaskSplit(shots=12).split(X, y, groups))
