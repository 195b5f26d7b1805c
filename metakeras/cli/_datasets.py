"""`metakeras datasets`: the known datasets and whether each is on this machine."""

from metakeras.cli._data import DATASETS, SPLITS, is_classification, locate

_HEADERS = ("dataset", "kind", "splits", "status", "location / how to get it")


def command(args):
    """Runs `metakeras datasets`: prints one row per dataset.

    Args:
        args: the `argparse.Namespace` of the `datasets` subcommand
            (`data_dir`).

    Returns:
        The exit code, `0`.
    """
    rows = []
    for name in DATASETS:
        status, where = locate(name, args.data_dir)
        kind = "classification" if is_classification(name) else "regression"
        rows.append((name, kind, "/".join(SPLITS[name]), status, where))
    # The last column (often a long sentence) is not padded.
    widths = [max(len(str(r[i])) for r in rows + [_HEADERS]) for i in range(4)]
    for row in [_HEADERS, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [row[4]]
        print("  ".join(cells))
    return 0
