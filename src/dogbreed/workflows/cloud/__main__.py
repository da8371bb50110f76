import sys

from dogbreed.workflows.cloud.cli import main

sys.exit(main())
