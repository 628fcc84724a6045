"""``python -m castate.cli``: the castate command."""

import sys

from castate.cli import main

sys.exit(main())
