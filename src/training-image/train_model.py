"""SageMaker training entry point (SAGEMAKER_PROGRAM=train_model.py).

Runs unchanged natively: ``python src/training-image/train_model.py --data-dir local_data/sample``.
"""

import sys

from dogbreed.training.cli import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
