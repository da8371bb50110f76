"""Explanations of predictions: Kernel SHAP over SLIC superpixels (SageMaker Clarify's method for images), the
HTML report of ``make explain``, and Clarify's bias metrics for the data and the predictions.

Torch-free: the serving image uses :mod:`dogbreed.explain.explainer` for inline explanations.
"""
