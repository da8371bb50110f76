"""Entry point of hyperparameter tuning jobs (SAGEMAKER_PROGRAM=hpo.py).

The same training as train_model.py with a shorter budget per trial: fewer
epochs and quicker early stopping. The objective metric (the last
``val_accuracy=`` line, see dogbreed.training.metrics) is always logged.
"""

import sys

from dogbreed.training.cli import get_args_parser, main

PROG = "hpo.py"

if __name__ == "__main__":
    parser = get_args_parser(prog=PROG, description="One hyperparameter-tuning trial: a short training run.")
    parser.set_defaults(epochs=3, patience=1)
    sys.exit(main(parser.parse_args(), prog=PROG))
