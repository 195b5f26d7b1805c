"""`metakeras demo`: MAML on sinusoid regression beside a pooled baseline.

The job itself (training, adaptation, tables and plot) is
`metakeras.demo.run_demo`; this module runs it with the parsed flags and
prints its summary.
"""

import sys


def command(args):
    """Runs `metakeras demo` with the parsed arguments.

    Args:
        args: the `argparse.Namespace` of the `demo` subcommand.

    Returns:
        The exit code: `0`, or `1` when the demo cannot run (an output folder
        that cannot be written, invalid values).
    """
    from metakeras.demo import INNER_LEARNING_RATE, format_summary, run_demo

    try:
        result = run_demo(
            seed=args.seed,
            output_dir=args.output_dir,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            eval_tasks=args.eval_tasks,
            verbose=0 if args.quiet else "auto",
        )
    except (OSError, ValueError) as error:
        print(f"metakeras demo: error: {error}", file=sys.stderr)
        return 1
    print()
    print(
        f"Post-adaptation MSE on {args.eval_tasks} held-out sinusoid tasks "
        f"(mean ± 95% CI; inner learning rate {INNER_LEARNING_RATE}):"
    )
    print(format_summary(result["summary"]))
    print()
    for name, path in result["paths"].items():
        print(f"{name:>9}: {path}")
    print(f"wall time: {result['seconds']:.0f} s")
    return 0
