"""``python -m langchain_quota_router.cli``: the ``quota-router`` command without the script."""

import sys

from langchain_quota_router.cli import main

sys.exit(main())
