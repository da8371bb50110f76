"""Train and serve torchvision image classifiers on Amazon SageMaker."""

__version__ = "0.1.0"
