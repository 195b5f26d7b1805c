import sys

from metakeras.cli import main

sys.exit(main())
