"""``python -m genolm.cli ...``: the ``genolm`` command line."""

import sys

from genolm.cli import main

sys.exit(main())
