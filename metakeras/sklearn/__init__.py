"""scikit-learn estimators that meta-learn, and model selection on unseen tasks.

`MetaClassifier` and `MetaRegressor` wrap the whole metakeras chain
(episodes from `X, y`, a `MetaModel`, adaptation) behind the scikit-learn
estimator API, so a meta-learner drops into `Pipeline`, `GridSearchCV` and
`cross_val_score`:

- `fit(X, y)` meta-trains on episodes drawn from the rows of `X, y`: few-shot
  classification episodes over the classes of `y` (`metakeras.tasks.
  TaskSampler`), or, for regression, support/query sets drawn within the tasks
  named by `groups` (`metakeras.tasks.GroupedTasks`). It then adapts to the
  whole training set, so `predict`, `predict_proba` and `score` work in the
  ordinary scikit-learn way.
- `adapt(X_support, y_support)` adapts to a new task (its classes may never
  have been seen in `fit`) from a few labelled rows; afterwards `predict`,
  `predict_proba` and `score` refer to that task. The meta-learned weights are
  not changed, so one can adapt again to another task. The function
  `adapt(estimator, X_support, y_support)` does the same for a `Pipeline`
  whose last step is a meta-learner.

Model selection on unseen classes: scikit-learn's splitters score held-out
rows of the classes an estimator was trained on. `ClassSplit` holds out
whole classes (`TaskSplit`: whole tasks named by `groups`), and its
`scorer()`, a `FewShotScorer`, adapts the fitted estimator to `shots` rows
of each held-out class and scores the rest:

```python
cv = ClassSplit(n_splits=5, test_classes=4, shots=5, random_state=0)
cross_val_score(MetaClassifier(), X, y, cv=cv, scoring=cv.scorer())
```

The modules: `classifier` and `regressor` (the estimators), `model_selection`
(the splitters), `scoring` (the scorer), `adaptation` (`adapt`). This package
is named `metakeras.sklearn`; it imports scikit-learn with absolute imports
(`import sklearn`), which always resolve to the top-level scikit-learn
package.
"""

from metakeras.sklearn.adaptation import adapt
from metakeras.sklearn.classifier import MetaClassifier
from metakeras.sklearn.model_selection import ClassSplit, TaskSplit
from metakeras.sklearn.regressor import MetaRegressor
from metakeras.sklearn.scoring import FewShotScorer

__all__ = [
    "ClassSplit",
    "FewShotScorer",
    "MetaClassifier",
    "MetaRegressor",
    "TaskSplit",
    "adapt",
]
