import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import metakeras  # noqa: E402, F401

# Where Keras puts models and tensors: a GPU when there is one.
DEVICE = keras.ops.convert_to_tensor(0.0).device
CUDA = DEVICE.type == "cuda"
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
cpu_only = pytest.mark.skipif(CUDA, reason="a CPU-only setting")

if CUDA:
    # The tests compare with float32 and float64 references at float32
    # tolerances. TF32 (cuDNN's default for convolutions on Ampere and later)
    # rounds the operands of convolutions and matrix products to 10-bit
    # mantissas, and cuDNN's fastest algorithms may sum in a different order
    # on every call; neither fits those tolerances or the bitwise checks.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def on_device(value):
    """`value` (an array or tensor) as a tensor on Keras's device."""
    return keras.ops.convert_to_tensor(value)


def mlp(hidden=16, outputs=1, inputs=1, activation="tanh", name=None):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation=activation),
            keras.layers.Dense(outputs),
        ],
        name=name,
    )


def classification_episodes(tasks=4, ways=3, shots=2, queries=3, features=4, seed=0):
    """Separable synthetic classification episodes in the episode contract."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(tasks, ways, features)) * 3

    def draw(n):
        y = np.tile(np.arange(ways), (tasks, n))
        x = centers[np.arange(tasks)[:, None], y] + rng.normal(
            size=(tasks, ways * n, features)
        )
        return x.astype("float32"), y.astype("int64")

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}
