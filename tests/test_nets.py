"""nets/tagging.py: the model's names and shapes, the loss math against hand-computed values,
precision@1, the learning-rate schedule and the train_dir checks."""
import json

import numpy as np
import pytest

from nets import tagging

tf = tagging.tf  # tensorflow.compat.v1


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
        loss = run(tagging.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS), "sigmoid"))
    expected = np_sigmoid_ce(LOGITS.astype(np.float64), LABELS).sum(axis=1).mean()
    # Logits go through exactly one sigmoid (the seed applied two).
    assert loss == pytest.approx(expected, rel=1e-6)
    # By hand: CE(z, 1) = ln(1 + e^-z), CE(z, 0) = ln(1 + e^z).
    # row 1: 0.126928 + 0.313262 + 0.474077 + 0.693147 = 1.607414
    # row 2: 0.048587 + 1.701413 + 0.693147 + 0.018150 = 2.461297; mean 2.034356
    assert loss == pytest.approx(2.034356, abs=1e-5)


def test_softmax_loss_uses_targets_normalised_to_sum_to_one():
    with tf.Graph().as_default():
        loss = run(tagging.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS), "softmax"))
    logits = LOGITS.astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = LABELS / LABELS.sum(axis=1, keepdims=True)  # [.5 0 .5 0], [0 0 0 1]
    expected = -(targets * log_softmax).sum(axis=1).mean()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_an_image_without_tags_adds_no_softmax_loss():
    with tf.Graph().as_default():
        loss = run(tagging.tagging_loss(tf.constant(LOGITS), tf.constant(LABELS * [[1], [0]]),
                                        "softmax"))
    logits = LOGITS[0].astype(np.float64)
    first = -(0.5 * (logits[0] + logits[2]) - np.log(np.exp(logits).sum()))
    assert loss == pytest.approx(first / 2, rel=1e-6)


def test_total_loss_adds_aux_loss_at_0_4_and_the_regularization():
    with tf.Graph().as_default():
        aux = LOGITS[::-1].copy()
        weight = tf.get_variable("w", initializer=tf.constant([3.0, 4.0]))
        tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, 0.01 * tf.reduce_sum(weight ** 2))
        total, parts = tagging.total_loss(tf.constant(LOGITS), {"AuxLogits": tf.constant(aux)},
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
        assert run(tagging.precision_at_1(tf.constant(LOGITS), tf.constant(labels))) == 0.5


def test_scores_are_sigmoid_or_softmax_of_the_logits():
    with tf.Graph().as_default():
        sigmoid = run(tagging.scores_from_logits(tf.constant(LOGITS), "sigmoid"))
        softmax = run(tagging.scores_from_logits(tf.constant(LOGITS), "softmax"))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-LOGITS)), rtol=1e-6)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-6)


def test_learning_rate_warms_up_then_decays():
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        exponential = tagging.learning_rate_schedule(step, 0.1, 1000, 10, "exponential", 100)
        cosine = tagging.learning_rate_schedule(step, 0.1, 1010, 10, "cosine")
        with tf.Session() as session:
            values = {s: session.run([exponential, cosine], {step: s})
                      for s in (0, 9, 10, 109, 110, 1010)}
    assert values[0][0] == pytest.approx(0.01) and values[9][0] == pytest.approx(0.1)
    assert values[109][0] == pytest.approx(0.1) and values[110][0] == pytest.approx(0.094)
    assert values[10][1] == pytest.approx(0.1) and values[1010][1] == pytest.approx(1e-4)


def test_inception_v3_keeps_slim_names_and_sizes_both_heads_to_the_vocabulary():
    with tf.Graph().as_default():
        images = tf.zeros([2, 107, 107, 3])
        logits, end_points = tagging.build_logits(images, 7, "inception_v3", 0.1,
                                                  is_training=True)
        names = [v.op.name for v in tf.global_variables()]
        assert logits.shape.as_list() == [2, 7]
        assert end_points["AuxLogits"].shape.as_list() == [2, 7]
        assert all(name.startswith("InceptionV3/") for name in names)
        assert "InceptionV3/Logits/Conv2d_1c_1x1/weights" in names
        assert "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_mean" in names
        assert tf.losses.get_regularization_losses()  # the arg_scope's weight decay
    with tf.Graph().as_default():  # too small for the auxiliary head: it is left out
        _, end_points = tagging.build_logits(tf.zeros([1, 75, 75, 3]), 7, depth_multiplier=0.1,
                                             is_training=True)
        assert "AuxLogits" not in end_points


def test_other_backbone_through_the_factory():
    with tf.Graph().as_default():
        logits, _ = tagging.build_logits(tf.zeros([1, 64, 64, 3]), 3, "inception_v2", 0.25)
        assert logits.shape.as_list() == [1, 3]
        assert tf.global_variables()[0].op.name.startswith("InceptionV2/")


CONFIG = {"backbone": "inception_v3", "depth_multiplier": 0.5, "num_tags": 3, "loss": "sigmoid",
          "image_size": 139}


def write_train_dir(directory, config, vocab, checkpoint=True):
    (directory / "train_config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    if checkpoint:  # the index tf.train.latest_checkpoint reads, and the file it checks
        (directory / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1"\n')
        (directory / "model.ckpt-1.index").write_bytes(b"")


def test_train_dir_of_another_vocabulary_or_model_is_refused(tmp_path):
    write_train_dir(tmp_path, CONFIG, ["a", "b", "c"], checkpoint=False)
    # No checkpoint yet: an earlier attempt's settings do not bind the new run.
    tagging.check_train_dir(str(tmp_path), dict(CONFIG, depth_multiplier=1.0), ["x"])
    write_train_dir(tmp_path, CONFIG, ["a", "b", "c"])
    tagging.check_train_dir(str(tmp_path), CONFIG, ["a", "b", "c"])  # same run: fine
    with pytest.raises(tagging.TrainDirError, match="another vocabulary.*line 2"):
        tagging.check_train_dir(str(tmp_path), CONFIG, ["a", "x", "c"])
    with pytest.raises(tagging.TrainDirError, match="depth_multiplier=0.5"):
        tagging.check_train_dir(str(tmp_path), dict(CONFIG, depth_multiplier=1.0), ["a", "b", "c"])
    config, vocab = tagging.load_train_dir(str(tmp_path))
    assert config == CONFIG and vocab == ["a", "b", "c"]


def test_resolve_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(tagging.TrainDirError, match="no checkpoint in"):
        tagging.resolve_checkpoint(str(tmp_path))
    with pytest.raises(tagging.TrainDirError, match="no checkpoint at"):
        tagging.resolve_checkpoint(str(tmp_path / "model.ckpt-5"))
    with pytest.raises(tagging.TrainDirError, match="vocab.txt is missing|train_config.json"):
        tagging.load_train_dir(str(tmp_path))
