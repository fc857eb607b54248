"""``python -m shm``: see :mod:`shm.cli`."""

import sys

from shm.cli import main

sys.exit(main())
