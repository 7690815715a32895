"""``python -m tools.chaos`` (``make chaos``)."""

import sys

from tools.chaos.command import main

sys.exit(main())
