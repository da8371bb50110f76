"""Serving: an MMS handler that routes on SageMaker's TargetModel header."""
