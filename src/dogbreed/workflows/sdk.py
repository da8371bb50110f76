"""The SageMaker Python SDK v3, imported in this one place and only when a workflow runs.

The workflows use its ``ModelTrainer`` (local mode and training jobs), its
``HyperparameterTuner``, its Clarify processor, its session (the default
bucket) and its local-mode runtime client. Every session they open has the
SDK's telemetry turned off (:data:`dogbreed.workflows.SDK_CONFIG`).

``sagemaker.train.model_trainer`` imports the SDK's own compatibility shim
``sagemaker.train.configs``, which warns that the shim moved to
``sagemaker.core.training.configs``; the warning is about the SDK's code, not
this project's, so it is filtered for that import alone.
"""

from __future__ import annotations

import warnings
from typing import Any

from dogbreed.workflows import SDK_CONFIG

# The one warning the SDK's own imports raise (sagemaker 3.27).
SDK_SHIM_WARNING = r"sagemaker\.train\.configs has been moved"


def trainer_module() -> Any:
    """``sagemaker.train.model_trainer``: ``ModelTrainer`` and ``Mode``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SDK_SHIM_WARNING, category=DeprecationWarning)
        import sagemaker.train.model_trainer as model_trainer
    return model_trainer


def tuner_module() -> Any:
    """``sagemaker.train.tuner``: ``HyperparameterTuner``."""
    trainer_module()  # the tuner imports the trainer
    import sagemaker.train.tuner as tuner

    return tuner


def session(boto_session: Any, sagemaker_client: Any = None, runtime_client: Any = None, default_bucket=None) -> Any:
    """A v3 ``Session`` on these clients, telemetry off."""
    from sagemaker.core.helper.session_helper import Session

    return Session(
        boto_session=boto_session,
        sagemaker_client=sagemaker_client,
        sagemaker_runtime_client=runtime_client,
        default_bucket=default_bucket,
        sagemaker_config=SDK_CONFIG,
    )


def local_runtime(port: int) -> Any:
    """The SDK's local-mode runtime client: ``invoke_endpoint`` against 127.0.0.1:``port`` as against an endpoint,
    ``TargetModel`` sent as the X-Amzn-SageMaker-Target-Model header."""
    from sagemaker.core.local.local_session import LocalSagemakerRuntimeClient

    return LocalSagemakerRuntimeClient(config={"local": {"serving_port": port}})
