"""Few-shot accuracy on real Omniglot: train on background, test on evaluation.

Meta-trains each algorithm on the background alphabets (964 characters x 4
rotations = 3,856 classes, 28x28) for a wall-clock budget, then evaluates
600 episodes each of 5-way 1-shot and 20-way 1-shot on the 659 characters of
the evaluation alphabets, reporting accuracy with its 95% CI. The data is
read from `../shared/data/omniglot` (or `METAKERAS_DATA`, or downloaded).

Settings (`--algorithm`):
- `protonet` (and `matchingnet`, `r2d2`, `relationnet` the same way):
  conv4 embedding, `--train-ways` (60) way 1-shot
  `--train-queries` (2) query training episodes, Adam 1e-3 halved every
  1,000 episodes. 60-way 2-query costs what the plain-PyTorch floor's
  30-way 5-query episodes cost (180 images) and, with more classes per
  episode, trains a better embedding (Snell et al. also train Omniglot
  60-way); `--train-ways 30 --train-queries 5` is the floor's recipe.
  Evaluated with moving BatchNorm statistics and, in a second row, with each
  episode's batch statistics (`transductive_eval=True`).
- `maml`, `fomaml`, `metasgd`, `anil`: conv4 + head, 5-way 1-shot 15-query, meta-batch
  `--meta-batch`, one inner step at `--inner-lr` (0.4) in training,
  `--test-steps` (1) at test, Adam at `--learning-rate` (1e-3). By default with the "zeroing
  trick" (`metakeras.callbacks.ZeroHead`; Kao et al., 2022): the head starts at zero
  and is reset to zero after every outer step, so one inner step turns it
  into a prototype classifier of the support embeddings; `--no-zeroing`
  trains the head as plain MAML does. Queries are normalised with their own
  batch statistics at evaluation (`transductive_eval=True`, the MAML
  reference code's setting) and, in a second row, with the moving
  statistics (`transductive_eval=False`).
- `reptile`: the preset `reptile-omniglot` (5-way 10-shot tasks, five
  inner Adam steps at 1e-3 in batches of 10, meta-batch 5, the zeroing
  trick), evaluated after its five inner steps (`--test-steps` to change;
  the paper takes 50 on 1-shot tasks).
- `mamlpp`, `imaml`: the presets `mamlpp-omniglot` (MAML++: five inner
  steps with learned per-step rates from 0.1, per-step BatchNorm
  statistics, multi-step loss for 10 epochs of 100 meta-batches, first
  order for 5, Adam cosine-annealed over `--decay-steps`) and
  `imaml-omniglot` (ten inner steps at 0.1 on the proximal problem,
  `proximal_lambda=2`, five conjugate-gradient steps), both on the MAML
  episodes above with the zeroing trick, evaluated after as many inner
  steps as they train with (`--test-steps` to change it).
- `baseline`, `baselinepp`, `simpleshot`: conv4 pretrained as a classifier
  of all 3,856 rotated background classes (the `*-omniglot` presets:
  batches of 64 classes x 2 examples: SGD at 0.05 on conv4 without its
  final ReLU for SimpleShot (the rate halved every 2,000 batches) and
  Baseline++ (a constant rate), Adam 1e-3 halved every 2,000 batches for
  Baseline); each test episode then fits a new
  linear (Baseline) or cosine (Baseline++) head on the support embeddings,
  or classifies by the nearest centroid of CL2N features (SimpleShot,
  centred on the training batches' mean embedding). The SimpleShot and
  Baseline++ presets add a center loss to the pretraining (0.003 and 10;
  `--center-loss` to change it). `--ema MOMENTUM`
  averages the weights during training and ends with the averages (any
  algorithm; Keras's `use_ema`).

Usage:
    python benchmarks/omniglot.py --algorithm protonet --minutes 15
    python benchmarks/omniglot.py --algorithm mamlpp --minutes 15

Appends to benchmarks/results/omniglot.csv and prints the table.
"""

import argparse
import dataclasses
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import _machine  # noqa: E402  (benchmarks/, the script's folder)
import keras  # noqa: E402
import pandas as pd  # noqa: E402

from metakeras.datasets import omniglot  # noqa: E402
from metakeras.evaluation import evaluate_episodes  # noqa: E402
from metakeras.models import presets, registry  # noqa: E402
from metakeras.tasks import TaskSampler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "omniglot")


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` of wall time have passed."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


ALGORITHMS = [name.removesuffix("-omniglot") for name in presets.available()]


def preset_for(args):
    """The public preset behind a run (`metakeras.models.presets`), with the
    command line's overrides."""
    preset = presets.get(f"{args.algorithm}-omniglot")
    if args.final_relu is not None:
        learner = dict(preset.learner, final_relu=args.final_relu == "on")
        preset = dataclasses.replace(preset, learner=learner)
    if args.ema is not None:
        preset = dataclasses.replace(preset, ema_momentum=args.ema)
    if args.learning_rate is not None:
        preset = dataclasses.replace(preset, learning_rate=args.learning_rate)
    algorithm = registry.get(args.algorithm)
    if args.center_loss is not None:
        if not algorithm.pretrains:
            raise SystemExit(
                f"--center-loss is a setting of the pretrained baselines "
                f"(baseline, baselinepp, simpleshot); got --algorithm {args.algorithm}"
            )
        inner = dict(preset.inner, center_loss=args.center_loss)
        preset = dataclasses.replace(preset, inner=inner)
    if algorithm.pretrains:
        return preset
    if not algorithm.inner_loop:
        episodes = dict(
            preset.episodes, ways=args.train_ways, queries=args.train_queries
        )
        return dataclasses.replace(preset, episodes=episodes)
    inner = dict(preset.inner)
    if args.inner_lr is not None:
        inner["inner_learning_rate"] = args.inner_lr
    if args.inner_steps is not None:
        inner["inner_steps"] = args.inner_steps
    if args.first_order_epochs is not None:
        if args.algorithm != "mamlpp":
            raise SystemExit(
                f"--first-order-epochs is a mamlpp setting; got --algorithm "
                f"{args.algorithm}"
            )
        inner["first_order_epochs"] = args.first_order_epochs
    changes = {}
    if args.decay_steps is not None:
        changes["cosine_decay_steps"] = args.decay_steps
    return dataclasses.replace(
        preset,
        episodes=dict(
            preset.episodes,
            meta_batch_size=args.meta_batch or preset.episodes["meta_batch_size"],
        ),
        inner=inner,
        zero_head=not args.no_zeroing,
        **changes,
    )


def build_parser():
    """The command line's arguments (`preset_for` reads them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--algorithm",
        default="protonet",
        choices=ALGORITHMS,
    )
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument(
        "--meta-batch",
        type=int,
        default=None,
        help="tasks per meta-batch, gradient-based methods (default: the "
        "preset's, 16; reptile 5)",
    )
    parser.add_argument(
        "--train-ways", type=int, default=60, help="metric learners' training episodes"
    )
    parser.add_argument(
        "--train-queries",
        type=int,
        default=2,
        help="metric learners' training episodes",
    )
    parser.add_argument(
        "--inner-lr",
        type=float,
        default=None,
        help="inner learning rate (default: the preset's, 0.4 for the MAML "
        "family, 0.1 for mamlpp and imaml)",
    )
    parser.add_argument(
        "--inner-steps",
        type=int,
        default=None,
        help="gradient-based methods: inner steps in training (default: the "
        "preset's, 1 for the MAML family, 5 for mamlpp and reptile, 10 for imaml)",
    )
    parser.add_argument(
        "--first-order-epochs",
        type=int,
        default=None,
        help="mamlpp: epochs of first-order gradients before second order "
        "(default: the preset's, 5 epochs of 100 meta-batches)",
    )
    parser.add_argument(
        "--test-steps",
        type=int,
        default=None,
        help="inner steps at test (default: the training steps)",
    )
    parser.add_argument(
        "--decay-steps",
        type=int,
        default=None,
        help="mamlpp: meta-batches of the cosine annealing (default 10,000)",
    )
    parser.add_argument(
        "--final-relu",
        choices=("on", "off"),
        default=None,
        help="conv4's ReLU after its last block (default: the preset's; off "
        "for simpleshot and baselinepp, on for the others)",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=None,
        help="momentum of an exponential moving average of the weights, "
        "used at the end of training (default: the preset's, none)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="the outer (training) optimizer's learning rate (default: the "
        "preset's, 1e-3 for Adam, 0.05 for SGD)",
    )
    parser.add_argument(
        "--center-loss",
        type=float,
        default=None,
        help="baseline, baselinepp, simpleshot: weight of the center loss in "
        "pretraining (default: the preset's, 0.003 for simpleshot, 10 for "
        "baselinepp, none for baseline; 0 for none)",
    )
    parser.add_argument(
        "--no-zeroing",
        action="store_true",
        help="MAML family: train the head (no zeroing trick)",
    )
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training batches per epoch (default: the preset's, 1,000; "
        "mamlpp 100, the epochs its schedules count)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=SHARED if os.path.isdir(SHARED) else None)
    _machine.add_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    machine = _machine.check_quiet(args)

    keras.utils.set_random_seed(args.seed)
    (x_bg, y_bg), (x_ev, y_ev), info = omniglot.load_data(path=args.data)
    preset = preset_for(args)
    model = preset.model()
    train = preset.episodes
    maml = registry.get(args.algorithm).inner_loop
    zeroing = preset.zero_head
    sampler = preset.train_tasks(x_bg, y_bg, steps=args.steps, seed=args.seed)
    budget = TimeBudget(args.minutes * 60)
    start = time.perf_counter()
    model.fit(
        sampler, epochs=10_000, verbose=0, callbacks=preset.callbacks() + [budget]
    )
    train_seconds = time.perf_counter() - start

    setting = f"{train['ways']}-way {train['shots']}-shot {train['queries']}-query"
    setting = f"{setting} x{train['meta_batch_size']}"
    if "first_order_epochs" in preset.inner:
        first = preset.inner["first_order_epochs"] * sampler.steps
        setting = f"{setting}, first order for {first}"
    if not preset.learner.get("final_relu", True):
        setting = f"{setting}, no final ReLU"
    if preset.optimizer != "adam":
        setting = f"{setting}, {preset.optimizer}"
    if preset.inner.get("center_loss"):
        setting = f"{setting}, center loss {preset.inner['center_loss']:g}"
    if registry.get(args.algorithm).pretrains and preset.halve_every is None:
        setting = f"{setting}, constant rate"
    if preset.ema_momentum is not None:
        setting = f"{setting}, EMA {preset.ema_momentum}"
    if args.learning_rate is not None:
        setting = f"{setting}, outer rate {args.learning_rate:g}"
    rows = []
    for ways, transductive in [(5, True), (20, True), (5, False), (20, False)]:
        if maml and ways != 5 and not zeroing:
            continue  # a trained 5-output head cannot score 20 classes
        evaluated = preset.for_ways(model, ways)
        evaluated.transductive_eval = transductive
        test = TaskSampler(
            x_ev,
            y_ev,
            ways=ways,
            shots=1,
            queries=15,
            meta_batch_size=20,
            steps=args.episodes // 20,
            seed=args.seed + 1,
            resample=False,
        )
        test_steps = args.test_steps
        if test_steps is None:
            test_steps = model.inner.steps if maml else None
        steps = test_steps
        result = evaluate_episodes(
            evaluated,
            test,
            episodes=args.episodes,
            inner_steps=steps,
            metrics=["accuracy"],
            # The widened copy holds the trained weights but not the optimizer.
            allow_untrained=evaluated is not model,
        )
        mean, ci95 = result.mean("accuracy")
        rows.append(
            {
                "algorithm": args.algorithm,
                "test": f"{ways}-way 1-shot",
                "accuracy": mean,
                "ci95": ci95,
                "episodes": args.episodes,
                "train_minutes": round(train_seconds / 60, 1),
                "meta_batches": budget.batches,
                "tasks_seen": budget.batches * train["meta_batch_size"],
                "train_setting": setting,
                "seed": args.seed,
                "test_steps": steps,
                "zeroing": zeroing,
                "transductive": transductive,
                "data_check": info["check"],
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    _machine.append(table, os.path.join(HERE, "results", "omniglot.csv"), machine)


if __name__ == "__main__":
    main()
