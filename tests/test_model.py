"""nets/model.py: the model's names and shapes, the loss math against hand-computed values,
precision@1; nets/optimization.py's learning-rate schedule."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import model, optimization, recipe, train_step


def run(tensor, feed=None):
    with tf.Session() as session:
        return session.run(tensor, feed)


def np_sigmoid_ce(logits, labels):
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))


LOGITS = np.array([[2.0, -1.0, 0.5, 0.0], [-3.0, 1.5, 0.0, 4.0]], np.float32)
LABELS = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.float32)


def test_sigmoid_loss_sums_over_tags_and_averages_over_the_batch():
    with tf.Graph().as_default():
        loss = run(model.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS), "sigmoid"))
    expected = np_sigmoid_ce(LOGITS.astype(np.float64), LABELS).sum(axis=1).mean()
    # Logits go through exactly one sigmoid (the seed applied two).
    assert loss == pytest.approx(expected, rel=1e-6)
    # By hand: CE(z, 1) = ln(1 + e^-z), CE(z, 0) = ln(1 + e^z).
    # row 1: 0.126928 + 0.313262 + 0.474077 + 0.693147 = 1.607414
    # row 2: 0.048587 + 1.701413 + 0.693147 + 0.018150 = 2.461297; mean 2.034356
    assert loss == pytest.approx(2.034356, abs=1e-5)


def test_softmax_loss_uses_targets_normalised_to_sum_to_one():
    with tf.Graph().as_default():
        loss = run(model.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS), "softmax"))
    logits = LOGITS.astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = LABELS / LABELS.sum(axis=1, keepdims=True)  # [.5 0 .5 0], [0 0 0 1]
    expected = -(targets * log_softmax).sum(axis=1).mean()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_an_image_without_tags_adds_no_softmax_loss():
    with tf.Graph().as_default():
        loss = run(model.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS * [[1], [0]]),
                                        "softmax"))
    logits = LOGITS[0].astype(np.float64)
    first = -(0.5 * (logits[0] + logits[2]) - np.log(np.exp(logits).sum()))
    assert loss == pytest.approx(first / 2, rel=1e-6)


def test_total_loss_adds_aux_loss_at_0_4_and_the_regularization():
    with tf.Graph().as_default():
        aux = LOGITS[::-1].copy()
        weight = tf.get_variable("w", initializer=tf.constant([3.0, 4.0]))
        tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, 0.01 * tf.reduce_sum(weight ** 2))
        total, parts = model.total_loss(tf.constant(LOGITS), {"AuxLogits": tf.constant(aux)},
                                          tf.constant(LABELS), "sigmoid")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            total, parts = session.run([total, parts])
    tags = np_sigmoid_ce(LOGITS.astype(np.float64), LABELS).sum(axis=1).mean()
    aux_loss = np_sigmoid_ce(aux.astype(np.float64), LABELS).sum(axis=1).mean()
    assert parts["reg"] == pytest.approx(0.25)
    assert total == pytest.approx(tags + 0.4 * aux_loss + 0.25, rel=1e-6)


def test_precision_at_1_counts_images_whose_top_tag_is_theirs():
    with tf.Graph().as_default():
        labels = np.array([[1, 0, 1, 0], [0, 0, 1, 0]], np.float32)  # top: tag 0, tag 3
        assert run(model.precision_at_1(tf.constant(LOGITS), tf.constant(labels))) == 0.5


def test_scores_are_sigmoid_or_softmax_of_the_logits():
    with tf.Graph().as_default():
        sigmoid = run(model.scores_from_logits(tf.constant(LOGITS), "sigmoid"))
        softmax = run(model.scores_from_logits(tf.constant(LOGITS), "softmax"))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-LOGITS)), rtol=1e-6)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-6)


def test_learning_rate_warms_up_then_decays():
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        exponential = optimization.learning_rate_schedule(step, 0.1, 1000, 10, "exponential", 100)
        cosine = optimization.learning_rate_schedule(step, 0.1, 1010, 10, "cosine")
        with tf.Session() as session:
            values = {s: session.run([exponential, cosine], {step: s})
                      for s in (0, 9, 10, 109, 110, 1010)}
    assert values[0][0] == pytest.approx(0.01) and values[9][0] == pytest.approx(0.1)
    assert values[109][0] == pytest.approx(0.1) and values[110][0] == pytest.approx(0.094)
    assert values[10][1] == pytest.approx(0.1) and values[1010][1] == pytest.approx(1e-3)


def test_inception_v3_keeps_slim_names_and_sizes_both_heads_to_the_vocabulary():
    with tf.Graph().as_default():
        images = tf.zeros([2, 107, 107, 3])
        logits, end_points = model.build_logits(images, 7, "inception_v3", 0.1,
                                                is_training=True)
        names = [v.op.name for v in tf.global_variables()]
        assert logits.shape.as_list() == [2, 7]
        assert end_points["AuxLogits"].shape.as_list() == [2, 7]
        assert all(name.startswith("InceptionV3/") for name in names)
        assert "InceptionV3/Logits/Conv2d_1c_1x1/weights" in names
        assert "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_mean" in names
        assert tf.losses.get_regularization_losses()  # the arg_scope's weight decay
    with tf.Graph().as_default():  # too small for the auxiliary head: it is left out
        _, end_points = model.build_logits(tf.zeros([1, 75, 75, 3]), 7, depth_multiplier=0.1,
                                           is_training=True)
        assert "AuxLogits" not in end_points


def test_other_backbone_through_the_factory():
    with tf.Graph().as_default():
        logits, _ = model.build_logits(tf.zeros([1, 64, 64, 3]), 3, "inception_v2", 0.25)
        assert logits.shape.as_list() == [1, 3]
        assert tf.global_variables()[0].op.name.startswith("InceptionV2/")


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_a_new_head_starts_at_the_loss_of_the_tag_priors(loss):
    # 200 images, 6 tags of very different frequencies; the head is built by the training graph
    # (both heads), then set to zero weights and the prior biases, as train.py does.
    rng = np.random.default_rng(0)
    frequencies = np.array([0.6, 0.3, 0.1, 0.05, 0.02, 0.01])
    labels = (rng.uniform(size=(200, 6)) < frequencies).astype(np.float32)
    counts = labels.sum(axis=0)
    biases = model.prior_biases(counts, len(labels), loss)
    settings = recipe.settings("cpu", image_size=107, depth_multiplier=0.1, loss=loss,
                               batch_size=200)
    with tf.Graph().as_default():
        batch = {"images": rng.integers(0, 256, (200, 107, 107, 3), dtype=np.uint8),
                 "draws": rng.uniform(size=(200, 5)).astype(np.float32), "labels": labels}
        run_ops = train_step.build_steps(settings, tf.data.Dataset.from_tensors(batch).repeat(),
                                         6, optimization.stage(settings, 0, 10, 1),
                                         mixed_precision=False)
        with tf.Session() as session:
            session.run([tf.global_variables_initializer()] + run_ops["initializers"])
            session.run(model.initialize_heads_op("inception_v3", biases))
            summaries = tf.Summary.FromString(session.run(run_ops["summaries"]))
    values = {v.tag: v.simple_value for v in summaries.value}
    if loss == "sigmoid":
        p = counts / len(labels)
        expected = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(axis=1).mean()
    else:
        p = np.exp(biases) / np.exp(biases).sum()
        targets = labels / np.maximum(labels.sum(axis=1, keepdims=True), 1)
        expected = -(targets * np.log(p)).sum(axis=1).mean()
    assert values["loss/tags"] == pytest.approx(expected, rel=0.01)
    assert values["loss/aux"] == pytest.approx(expected, rel=0.01)  # the auxiliary head too
    if loss == "sigmoid":  # against 6 ln 2 = 4.16 for a head at zero, HARRISON's 691
        assert values["loss/tags"] < 0.5 * 6 * np.log(2)
