"""The tag head at every image size (issue 18): one global mean of the last block feeds both the
linear probe's features and the scoring graph, from the smallest size a backbone builds on up to
512 px, and --trainable_scopes freezes everything outside them (inference mode, bit-identical)."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import check_run, run_script
from nets import linear_probe, model, train_dir
from train_records import write_records

CONFIG = {"backbone": "inception_v3", "depth_multiplier": 0.1, "num_tags": 5, "loss": "sigmoid"}


def randomize_batch_norm():
    """Moving statistics away from slim's 0/1 start, so inference mode shows (means near 0:
    large ones would zero every ReLU, and with them the features)."""
    rng = np.random.default_rng(0)
    ranges = {"moving_mean": (-0.2, 0.2), "moving_variance": (0.5, 1.5)}
    return tf.group([v.assign(rng.uniform(*ranges[v.op.name.split("/")[-1]],
                                          v.shape.as_list()).astype(np.float32))
                     for v in tf.global_variables() if "moving_" in v.op.name])


@pytest.mark.parametrize("size", [299, 400])
def test_the_probe_logits_are_the_scoring_graph_logits(size):
    # 400 px: slim's fixed 8x8 pool would read the top-left 64 of Mixed_7c's 100 cells (and
    # from 363 px fail to build); the probe was fitted on the mean of all of them.
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with tf.Graph().as_default():
        logits, end_points = model.build_logits(tf.constant(images), 5, "inception_v3", 0.1)
        variables = model.head_variables("inception_v3")[model.get_backbone(
            "inception_v3").heads[0]]
        probe = linear_probe.probe_logits(end_points["Features"], *variables)
        with tf.Session() as session:
            session.run([tf.global_variables_initializer(), randomize_batch_norm()])
            session.run(variables[1].assign(rng.normal(size=5).astype(np.float32)))
            scored, probed = session.run([logits, probe])
    assert scored.shape == (2, 5) and np.abs(scored).max() > 0
    np.testing.assert_allclose(probed, scored, rtol=1e-5, atol=1e-5)


def test_every_backbone_builds_from_its_smallest_size_to_512():
    for name, spec in model.BACKBONES.items():
        for size in (spec.min_image_size, 512):
            with tf.Graph().as_default():
                logits, end_points = model.build_logits(tf.zeros([1, size, size, 3]), 3, name,
                                                        0.25, is_training=True)
                assert logits.shape.as_list() == [1, 3], (name, size)
                assert end_points["Features"].shape.rank == 2, (name, size)
                if spec.aux_block and size >= model.AUX_MIN_IMAGE_SIZE:
                    assert end_points["AuxLogits"].shape.as_list() == [1, 3], (name, size)


def test_train_evaluate_predict_and_export_at_512_px(tmp_path):
    records = str(tmp_path / "records")
    write_records(records, {"train": 4, "test": 2}, size=(80, 96))
    train = str(tmp_path / "train")
    check_run(run_script("train.py", "--preset=cpu", "--image_size=512", "--depth_multiplier=0.1",
                         "--batch_size=2", "--max_steps=1", f"--records_dir={records}",
                         f"--train_dir={train}"))
    evaluated = check_run(run_script("evaluate.py", f"--model={train}",
                                     f"--records_dir={records}", "--batch_size=2"))
    assert "precision@1" in evaluated.stdout
    photo = tmp_path / "photo.jpg"
    from PIL import Image
    Image.new("RGB", (600, 450), (200, 30, 40)).save(photo)
    predicted = check_run(run_script("predict.py", f"--model={train}", "--format=json",
                                     str(photo)))
    assert '"tags"' in predicted.stdout
    check_run(run_script("export.py", f"--model={train}", f"--export_dir={tmp_path / 'export'}"))
    assert os.path.isfile(tmp_path / "export" / "saved_model.pb")


def test_a_frozen_backbone_is_bit_identical_after_training(tmp_path):
    # --trainable_scopes: everything outside is built in inference mode (batch norm on its
    # moving averages, no updates) and not trained: weights AND moving statistics unchanged.
    records = str(tmp_path / "records")
    write_records(records, {"train": 16, "test": 2})
    start = str(tmp_path / "start" / "model.ckpt")
    with tf.Graph().as_default():
        model.build_logits(tf.zeros([1, 107, 107, 3]), 5, "inception_v3", 0.1, is_training=True)
        with tf.Session() as session:
            session.run([tf.global_variables_initializer(), randomize_batch_norm()])
            tf.train.Saver().save(session, start, write_meta_graph=False)
    train = str(tmp_path / "train")
    heads = "InceptionV3/Logits,InceptionV3/AuxLogits"
    check_run(run_script("train.py", "--preset=cpu", "--image_size=107", "--depth_multiplier=0.1",
                         "--batch_size=8", "--max_steps=3", "--probe_epochs=0",
                         f"--warm_start={start}", f"--trainable_scopes={heads}",
                         f"--records_dir={records}", f"--train_dir={train}"))
    before = tf.train.load_checkpoint(start)
    after = tf.train.load_checkpoint(train_dir.latest_checkpoint(train))
    frozen = [name for name in before.get_variable_to_shape_map()
              if not model.in_scopes(name, heads) and name.startswith("InceptionV3/")]
    assert len(frozen) > 300 and any("moving_mean" in name for name in frozen)
    for name in frozen:
        np.testing.assert_array_equal(after.get_tensor(name), before.get_tensor(name), name)
    # ... while the head trained: it started at zero weights (a new head after a warm start).
    assert np.abs(after.get_tensor("InceptionV3/Logits/Conv2d_1c_1x1/weights")).max() > 0
