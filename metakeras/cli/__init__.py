"""The `metakeras` command: meta-learning from the command line.

`metakeras` (or `python -m metakeras`) has four subcommands:

- `demo`: meta-trains MAML on sinusoid regression beside a pooled baseline
  and prints their post-adaptation errors (no data to download).
- `train`: meta-trains a model from a TOML/YAML config file and/or flags and
  writes `config.json`, `model.keras`, `history.csv` and its curves;
  rerunning the same command resumes an interrupted run.
- `evaluate`: adapts a saved model to the episodes of a dataset split and
  writes the scores (mean and 95% CI), per-episode tables and plots.
- `datasets`: lists the known datasets, their splits and where each is.

User mistakes print one line, `metakeras <command>: error: ...`, and exit
with `2` (invalid options or values) or `1` (missing data or files, failures
at run time); `130` when interrupted. `main(argv)` runs the command from
Python and returns the exit code. See docs/cli.md for every option.

Modules: `_parser` (the argparse definitions; the flags of the algorithm
settings come from `metakeras.models.registry`) and `_main` (runs a
subcommand, reports its errors); one module per subcommand (`_demo`,
`_train`, `_evaluate`, `_datasets`); and what they share: `_config` (the
settings of a run: defaults, config files, resolution), `_build` (the task
sources and model of a configuration), `_data` (datasets: their splits and
where they are on disk), `_checks` (valid values, for flags and files) and
`_errors` (`CLIError`).
"""

from metakeras.cli._main import main
from metakeras.cli._parser import build_parser

__all__ = ["build_parser", "main"]
