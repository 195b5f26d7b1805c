"""Datasets for meta-learning, in the style of `keras.datasets`.

Each module has a `load_data()` returning NumPy arrays (or, for image
folders, a lazily read `ImageFolder`) with integer class labels, ready for
`metakeras.tasks.TaskSampler`. See `datasets/` in the repository for a card
per dataset (source, licence, checksums, class splits).
"""

from metakeras.datasets import digits, mini_imagenet, omniglot
from metakeras.datasets.image_folder import ImageFolder

__all__ = ["ImageFolder", "digits", "mini_imagenet", "omniglot"]
