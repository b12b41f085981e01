"""``python -m alp``: the same command line as ``alp`` (a background runner is started this way, with the
interpreter that started it)."""

import sys

from alp.cli import main

sys.exit(main())
