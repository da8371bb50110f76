"""Workflows around the images: SageMaker local mode, registries."""
