"""Episodes (tasks) for meta-learning: the batch contract and task sources."""

from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode, validate_episode
from metakeras.tasks.sinusoid import SinusoidTasks

__all__ = ["EPISODE_KEYS", "SinusoidTasks", "unpack_episode", "validate_episode"]
