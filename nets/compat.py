"""Makes tf-slim 1.1.0 (2020, its last release) work on TensorFlow 2.16 and newer.

Every workaround the project needs lives here, each naming the breakage it covers. Import this
module before `tf_slim`; `import_slim()` does both in the right order and is what the rest of the
project calls. Each patch is applied only when the breakage is present, so the module is a no-op
on a TensorFlow that still has what slim expects.
"""
import importlib
import os
import sys
import warnings

# TensorFlow's C++ INFO/WARNING logs bury the scripts' own output; users can still set
# TF_CPP_MIN_LOG_LEVEL=0 to see them. (The few lines TF 2.20+ prints before absl's logging is
# initialised ignore this variable.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import ops  # noqa: E402

APPLIED = []  # names of the workarounds this process needed, for logs and tests


def _restore_ops_tensor():
    # Breakage 1: TF 2.16 removed `tensorflow.python.framework.ops.Tensor` (the class now lives
    # at `tf.Tensor` only). slim uses `isinstance(x, ops.Tensor)` in learning.py (gradient
    # multipliers), layers/utils.py (constant_value) and layers/optimizers.py.
    if not hasattr(ops, "Tensor"):
        ops.Tensor = tf.Tensor
        APPLIED.append("ops.Tensor")


def _alias_legacy_tf_layers():
    # Breakage 2: with Keras 3, TensorFlow's v1 layers (`tensorflow/python/layers/normalization.py`,
    # used by slim.batch_norm) lazily import `tf_keras.legacy_tf_layers`, but tf-keras 2.16+
    # moved that package to `tf_keras.src.legacy_tf_layers`. Alias the old names to the new ones.
    try:
        importlib.import_module("tf_keras.legacy_tf_layers.normalization")
        return
    except ModuleNotFoundError as error:
        if error.name == "tf_keras":
            raise ImportError(
                "tf-slim's batch_norm needs the tf-keras package on TensorFlow 2.16+: "
                "pip install tf-keras") from None
    for name in ("", ".base", ".core", ".convolutional", ".normalization", ".pooling"):
        sys.modules["tf_keras.legacy_tf_layers" + name] = importlib.import_module(
            "tf_keras.src.legacy_tf_layers" + name)
    APPLIED.append("tf_keras.legacy_tf_layers")


def _quiet_v1_deprecation_notices():
    # Not a breakage, noise: slim is built on the v1 graph APIs, which log a deprecation notice
    # (and Keras 3's legacy layers a `layer.apply` UserWarning) on every run of every script,
    # burying the scripts' own progress and results.
    from tensorflow.python.util import deprecation
    deprecation._PRINT_DEPRECATION_WARNINGS = False
    warnings.filterwarnings("ignore", message=r"`layer.apply` is deprecated")


_restore_ops_tensor()
_alias_legacy_tf_layers()
_quiet_v1_deprecation_notices()


def import_slim():
    """Returns the `tf_slim` module, imported after the workarounds above."""
    import tf_slim
    return tf_slim
