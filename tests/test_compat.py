"""tf-slim 1.1.0 builds and trains InceptionV3 on the installed TensorFlow through nets.compat."""
import numpy as np

from nets import compat


def test_slim_inception_v3_trains_a_step_with_batch_norm():
    compat.apply()
    import tensorflow.compat.v1 as tf
    import tf_slim as slim
    from tf_slim.nets import inception_v3

    graph = tf.Graph()
    with graph.as_default():
        images = tf.random.uniform([2, 139, 139, 3], seed=1)
        with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
            logits, end_points = inception_v3.inception_v3(
                images, num_classes=4, is_training=True, depth_multiplier=0.1)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.ones_like(logits), logits=logits))
        # create_train_op runs slim's isinstance(ops.Tensor) checks and batch-norm update ops.
        train_op = slim.learning.create_train_op(loss, tf.train.GradientDescentOptimizer(0.1))
        moving_mean = [v for v in tf.global_variables() if "moving_mean" in v.name][0]
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            before = session.run(moving_mean)
            session.run(train_op)
            after = session.run(moving_mean)
    assert logits.shape.as_list() == [2, 4]
    assert "AuxLogits" in end_points
    assert not np.allclose(before, after), "batch-norm moving averages were not updated"


def test_building_the_model_leaves_tensor_equality_as_it_was():
    # nets/model.py builds slim's layers under compat.graph_equality (identity hashing, a
    # faster build); eager code after it still compares tensors element-wise.
    import tensorflow as tf

    from nets import model
    with tf.Graph().as_default():
        logits, _ = model.build_logits(tf.zeros([1, 75, 75, 3]), 3, depth_multiplier=0.1)
    assert logits.shape.as_list() == [1, 3]
    equal = tf.constant([1, 2]) == tf.constant([1, 3])
    assert equal.numpy().tolist() == [True, False]
