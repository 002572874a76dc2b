"""Makes tf-slim 1.1.0 (2020, its last release) work on TensorFlow 2.16 and newer.

Every workaround the project needs lives here, each naming the breakage it covers. Nothing is
patched on import: `apply()` applies them, once per process (later calls do nothing), and logs
which ones this TensorFlow needed at debug level. nets/model.py calls it before it builds slim
layers, so every path to a slim network (scripts, tests, benchmarks) goes through it. Each
workaround is applied only when its breakage is present, so `apply()` is a no-op on a
TensorFlow that still has what slim expects.

One more is not a breakage but a cost: `graph_equality()`, which nets/model.py builds slim's
layers under.
"""
import contextlib
import importlib
import sys
import warnings

from absl import logging

_applied = None  # the workarounds this process needed, once apply() has run


def _restore_ops_tensor():
    # Breakage 1: TF 2.16 removed `tensorflow.python.framework.ops.Tensor` (the class now lives
    # at `tf.Tensor` only). slim uses `isinstance(x, ops.Tensor)` in learning.py (gradient
    # multipliers), layers/utils.py (constant_value) and layers/optimizers.py.
    import tensorflow as tf
    from tensorflow.python.framework import ops
    if hasattr(ops, "Tensor"):
        return []
    ops.Tensor = tf.Tensor
    return ["ops.Tensor"]


def _alias_legacy_tf_layers():
    # Breakage 2: with Keras 3, TensorFlow's v1 layers (`tensorflow/python/layers/normalization.py`,
    # used by slim.batch_norm) lazily import `tf_keras.legacy_tf_layers`, but tf-keras 2.16+
    # moved that package to `tf_keras.src.legacy_tf_layers`. Alias the old names to the new ones.
    try:
        importlib.import_module("tf_keras.legacy_tf_layers.normalization")
        return []
    except ModuleNotFoundError as error:
        if error.name == "tf_keras":
            raise ImportError(
                "tf-slim's batch_norm needs the tf-keras package on TensorFlow 2.16+: "
                "pip install tf-keras") from None
    for name in ("", ".base", ".core", ".convolutional", ".normalization", ".pooling"):
        sys.modules["tf_keras.legacy_tf_layers" + name] = importlib.import_module(
            "tf_keras.src.legacy_tf_layers" + name)
    return ["tf_keras.legacy_tf_layers"]


def _quiet_v1_deprecation_notices():
    # Not a breakage, noise: slim is built on the v1 graph APIs, which log a deprecation notice
    # (and Keras 3's legacy layers a `layer.apply` UserWarning) on every run of every script,
    # burying the scripts' own progress and results.
    from tensorflow.python.util import deprecation
    deprecation._PRINT_DEPRECATION_WARNINGS = False
    warnings.filterwarnings("ignore", message=r"`layer.apply` is deprecated")


@contextlib.contextmanager
def graph_equality():
    """Tensors and variables compare and hash by identity inside the block (TF1's rule, which
    graph mode follows anyway), then TensorFlow's setting is restored.

    Why: slim's batch_norm builds through tf-keras' legacy layers, whose add_weight makes a set
    of every global variable for each weight it adds. Under TF2's tensor equality each hash
    first asks whether eager execution is on outside functions (a walk of TensorFlow's context
    stacks): InceptionV3's 282 batch-norm weights hash tens of thousands of variables, about a
    tenth of a training graph's build (bench/bench_graph_build.py: 4.50 s with, 5.05 s without,
    the tests' model, 2 cores). Inside a graph the answer is always no and the hash is id():
    this skips the question, not the rule."""
    from tensorflow.python.framework import tensor as tensor_lib
    import tensorflow as tf
    was = tensor_lib.Tensor._USE_EQUALITY
    tf.compat.v1.disable_tensor_equality()
    try:
        yield
    finally:
        if was:
            tf.compat.v1.enable_tensor_equality()


def apply():
    """Applies the workarounds this TensorFlow needs (once); returns their names."""
    global _applied
    if _applied is None:
        _applied = _restore_ops_tensor() + _alias_legacy_tf_layers()
        _quiet_v1_deprecation_notices()
        logging.debug("tf-slim compat: applied %s", ", ".join(_applied) or "nothing (not needed)")
    return list(_applied)
