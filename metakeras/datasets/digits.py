"""The 8x8 handwritten digits bundled with scikit-learn (no download)."""


def load_data():
    """Loads scikit-learn's 8x8 digits: 1,797 images of 10 classes.

    The data ships inside scikit-learn (a copy of the UCI "Optical
    Recognition of Handwritten Digits" test set), so it needs no network:
    the embedded default dataset of metakeras' examples and tests. With only
    10 classes it suits small episodes (e.g. 5-way over disjoint class sets
    from `metakeras.tasks.split_classes`).

    Returns:
        `(x, y)`: `x` float32 `(1797, 8, 8)` scaled to `[0, 1]` (the raw
        values are 0-16), `y` int64 `(1797,)` digit labels 0-9.

    Example:

    >>> x, y = load_data()
    >>> x.shape, y.shape, float(x.max())
    ((1797, 8, 8), (1797,), 1.0)
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return x, y
