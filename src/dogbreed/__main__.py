"""``python -m dogbreed``: the ``dogbreed`` command, for environments where its script is not on PATH."""

import sys

from dogbreed.cli import main

sys.exit(main())
