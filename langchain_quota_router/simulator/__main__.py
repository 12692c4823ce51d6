"""Entry point: ``python -m langchain_quota_router.simulator --port N [--config F]``."""

import sys

from ._cli import main

sys.exit(main())
