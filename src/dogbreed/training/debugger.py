"""SageMaker Debugger (smdebug): the one place a hook is created.

The hook comes, in order of precedence, from:

1. SageMaker's Debugger JSON config (``SMDEBUG_CONFIG_FILE_PATH`` or
   ``<input config dir>/debughookconfig.json``), as real jobs with a
   ``DebuggerHookConfig`` get it;
2. an explicit ``--debug-out-dir``;
3. the default tensor folder: ``/opt/ml/output/tensors`` in a SageMaker job, where its Debugger hook
   config would put them, and ``tensors/`` in the output data folder otherwise.

``--debug-hook false`` turns the hook off (a Debugger config still wins).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from torch import nn

from dogbreed import sagemaker_env
from dogbreed.errors import ConfigError
from dogbreed.training.instruments import Instrument

log = logging.getLogger(__name__)

DEBUG_COLLECTIONS = ("losses", "weights", "gradients", "biases")
# The collection of the tensors rule_tensors.py writes through DebugHook.save.
RULE_INPUTS = "rule_inputs"


class DebugHook(Instrument):
    """An smdebug hook, or a no-op when training runs without one. As an instrument it follows the trainer's
    passes: TRAIN mode for training epochs, EVAL for validation, PREDICT for the test pass."""

    def __init__(self, hook=None, modes=None, source: str = "none"):
        self._hook = hook
        self._modes = modes
        self.source = source

    @property
    def enabled(self) -> bool:
        return self._hook is not None

    @property
    def out_dir(self) -> str | None:
        return self._hook.out_dir if self._hook is not None else None

    def register(self, model: nn.Module, loss: nn.Module) -> None:
        if self._hook is not None:
            self._hook.register_module(model)
            self._hook.register_loss(loss)

    def _set(self, mode_name: str) -> None:
        if self._hook is not None:
            self._hook.set_mode(getattr(self._modes, mode_name))

    def train(self) -> None:
        self._set("TRAIN")

    def eval(self) -> None:
        self._set("EVAL")

    def predict(self) -> None:
        self._set("PREDICT")

    def start_training(self, epoch: int) -> None:
        self.train()

    def start_evaluation(self, split: str) -> None:
        if split == "valid":
            self.eval()
        else:
            self.predict()

    def saves_layers_now(self) -> bool:
        """Whether the current step is a training step the save interval keeps layer tensors for."""
        hook = self._hook
        if hook is None or hook.mode != self._modes.TRAIN:
            return False
        return hook.save_config.should_save_step(hook.mode, hook.mode_steps[hook.mode])

    def save(self, name: str, value, collection: str) -> None:
        """Write ``value`` as tensor ``name`` of the current step, now.

        ``save_tensor`` alone holds the value until the next module callback, which after the backward pass
        is the next step's; writing at once files it under the step it describes.
        """
        hook = self._hook
        if hook is None or hook.writer is None:  # no writer: this step saves nothing
            return
        target = hook.get_collection(collection)  # created here, after smdebug validated its own
        if target.reduction_config is None:
            from smdebug.core.reduction_config import ReductionConfig

            target.reduction_config = ReductionConfig(save_raw_tensor=True)
        hook.save_tensor(name, value, collection)
        hook._save_custom_tensors_post_step()

    def close(self) -> None:
        if self._hook is not None:
            self._hook.close()


def create_hook(out_dir: Path | None, save_interval: int, collections: list[str], enabled: bool = True) -> DebugHook:
    """The job's hook: from SageMaker's Debugger config, else writing to ``out_dir`` or the default tensor folder.

    Losses are saved every step; weights, gradients and biases every ``save_interval`` steps as reductions
    (L2 norm, mean and max of absolute values) rather than whole tensors, which is what the rules and the report
    read, at a few hundred bytes per layer instead of the model's size.
    """
    config_file = sagemaker_env.debug_hook_config_file()
    if config_file is None and not enabled:
        log.info("smdebug: hook off (--debug-hook false)")
        return DebugHook()

    unknown = sorted(set(collections) - set(DEBUG_COLLECTIONS))
    if unknown:
        raise ConfigError(f"unknown debug collection(s) {unknown}; choose from {list(DEBUG_COLLECTIONS)}")
    if save_interval < 1:
        raise ConfigError(f"--debug-save-interval must be at least 1, got {save_interval}")

    # smdebug logs every registered tensor at INFO unless told otherwise.
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")
    import smdebug.pytorch as smd  # imported only when a hook is wanted: it is slow to import

    if config_file is not None:
        log.info("smdebug: hook from Debugger config %s", config_file)
        return DebugHook(smd.Hook.create_from_json_file(str(config_file)), smd.modes, f"config {config_file}")

    out_dir = _prepare_out_dir(out_dir)
    hook = smd.Hook(
        out_dir=str(out_dir),
        export_tensorboard=False,
        save_config=smd.SaveConfig(save_interval=save_interval),
        include_collections=list(collections),
    )
    if "losses" in collections:
        hook.get_collection("losses").save_config = smd.SaveConfig(save_interval=1)
    reductions = smd.ReductionConfig(norms=["l2"], abs_reductions=["mean", "max"])
    for name in set(collections) - {"losses"}:
        hook.get_collection(name).reduction_config = reductions
    log.info(
        "smdebug: hook writing %s (losses every step, the rest every %d steps) to %s",
        ",".join(collections),
        save_interval,
        out_dir,
    )
    return DebugHook(hook, smd.modes, str(out_dir))


def _prepare_out_dir(out_dir: Path | None) -> Path:
    """``out_dir`` (new or empty), or the default tensor folder, emptied of an earlier run's trial."""
    if out_dir is None:
        out_dir = sagemaker_env.default_tensor_dir()
        if out_dir.exists():
            log.info("smdebug: replacing the trial an earlier run left in %s", out_dir)
            shutil.rmtree(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--debug-out-dir {out_dir} is not empty; smdebug needs a new or empty folder")
    if out_dir.exists():
        out_dir.rmdir()  # smdebug refuses a folder that already exists
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir
