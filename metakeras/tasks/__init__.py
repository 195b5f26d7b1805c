"""Episodes (tasks) for meta-learning: the batch contract and task sources.

- `TaskSampler`: N-way K-shot classification episodes from arrays,
  DataFrames (`TaskSampler.from_dataframe`) or image folders
  (`TaskSampler.from_directory`).
- `SinusoidTasks`: the sinusoid regression family of the MAML paper.
- `GroupedTasks`: regression episodes from rows grouped into tasks (`x, y,
  groups`), each episode's support and query rows from one group.
- `split_classes`: disjoint meta-train / validation / test class splits.
"""

from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode, validate_episode
from metakeras.tasks.grouped import GroupedTasks
from metakeras.tasks.sinusoid import SinusoidTasks
from metakeras.tasks.splits import split_classes
from metakeras.tasks.task_sampler import TaskSampler

__all__ = [
    "EPISODE_KEYS",
    "GroupedTasks",
    "SinusoidTasks",
    "TaskSampler",
    "split_classes",
    "unpack_episode",
    "validate_episode",
]
