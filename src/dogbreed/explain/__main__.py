import sys

from dogbreed.explain.cli import run

sys.exit(run())
