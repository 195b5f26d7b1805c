"""Multi-process meta-training with `torch.distributed` (launched by `torchrun`).

Data parallelism over the meta-batch: each of the `W` processes (ranks) takes
a disjoint `1/W` share of the tasks of every meta-batch, computes the
meta-gradient of its share, and the meta-gradients are averaged with one
all-reduce before the outer optimizer step. Every rank then applies the same
step to the same weights, so all ranks hold identical weights throughout.

- `initialize()` joins the process group that `torchrun` describes in its
  environment variables (a no-op outside `torchrun`).
- `shard(tasks)` gives this rank its share of every meta-batch of a task
  source. All ranks draw from the *same* seeded sampler, so the union of the
  ranks' tasks is exactly the single-process meta-batch.
- `MetaModel` does the rest once the process group exists: it broadcasts
  rank 0's weights when `fit` starts, averages the meta-gradients and the
  learner's floating state (BatchNormalization moving statistics) over the
  ranks before every outer step, and computes the logged loss and metrics
  over all ranks' tasks.

No `DistributedDataParallel`: the inner loop is a pure function of the
weights (`stateless_call`, `torch.func`), so the meta-gradient is an explicit
`torch.autograd.grad` result, not a `.grad` that DDP's autograd hooks could
bucket; DDP's hooks also misbehave under second-order gradients, cloned
modules and functional calls (the learn2learn issues #128, #170, #197 and
#263). One all-reduce of the finished meta-gradient is simpler and exact.

Example:

```python
# train.py; run with: torchrun --nproc-per-node=2 train.py
import metakeras
from metakeras import distributed

distributed.initialize()  # before building the model
tasks = metakeras.tasks.SinusoidTasks(meta_batch_size=24, seed=0)
model = metakeras.MAML(learner)
model.compile(optimizer="adam", loss="mse")
model.fit(distributed.shard(tasks), epochs=10,
          verbose=1 if distributed.rank() == 0 else 0)
```
"""

# Private modules, one concept each: `_process_group` (joining the group,
# this process's rank), `_sharding` (`shard`), `_reduce` (the collective
# operations `MetaModel` uses) and `_backup` (`BackupAndRestore`).
from metakeras.distributed._backup import BackupAndRestore
from metakeras.distributed._process_group import (
    BACKENDS,
    DEFAULT_TIMEOUT_S,  # noqa: F401 (the default of `initialize(timeout=)`)
    initialize,
    is_distributed,
    rank,
    world_size,
)
from metakeras.distributed._reduce import all_reduce_mean, broadcast
from metakeras.distributed._sharding import shard

# In reading order, which the API page follows.
__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "initialize",
    "shard",
    "all_reduce_mean",
    "broadcast",
    "BackupAndRestore",
    "BACKENDS",
]
