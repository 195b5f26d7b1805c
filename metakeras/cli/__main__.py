"""`python -m metakeras.cli`, the same as `python -m metakeras`."""

import sys

from metakeras.cli import main

sys.exit(main())
