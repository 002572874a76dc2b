"""nets/train_dir.py: the train_dir contract. Checkpoints are found from their files whatever
the folder is called or wherever it moved, damaged ones are passed over for the newest usable
one, a train_dir of another model or vocabulary is refused, one trainer holds it at a time."""
import json
import os
import signal
import time

import pytest
import tensorflow.compat.v1 as tf

from conftest import REPO, start_python
from nets import restoring, train_dir

CONFIG = {"backbone": "inception_v3", "depth_multiplier": 0.5, "num_tags": 3, "loss": "sigmoid",
          "image_size": 139}


def save_checkpoints(directory, steps, shape=(3,)):
    """Real TF checkpoints model.ckpt-<step> of a graph with `weights` and the global step."""
    os.makedirs(directory, exist_ok=True)
    with tf.Graph().as_default():
        step = tf.train.get_or_create_global_step()
        tf.get_variable("weights", shape, initializer=tf.ones_initializer())
        saver = tf.train.Saver(max_to_keep=None)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for value in steps:
                session.run(step.assign(value))
                saver.save(session, os.path.join(directory, "model.ckpt"), global_step=value,
                           write_meta_graph=False)


def write_train_dir(directory, config=CONFIG, vocab=("a", "b", "c"), steps=(1,)):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "train_config.json"), "w") as stream:
        json.dump(config, stream)
    with open(os.path.join(directory, "vocab.txt"), "w") as stream:
        stream.write("".join(tag + "\n" for tag in vocab))
    if steps:
        save_checkpoints(directory, steps)


def test_another_vocabulary_or_model_is_refused_once_there_are_checkpoints(tmp_path):
    directory = str(tmp_path / "train")
    write_train_dir(directory, steps=())
    # No checkpoint yet: an earlier attempt's settings do not bind the new run.
    train_dir.check_compatible(directory, dict(CONFIG, depth_multiplier=1.0), ["x"])
    save_checkpoints(directory, [1])
    train_dir.check_compatible(directory, CONFIG, ["a", "b", "c"])  # same run: fine
    with pytest.raises(train_dir.TrainDirError, match="another vocabulary.*line 2"):
        train_dir.check_compatible(directory, CONFIG, ["a", "x", "c"])
    with pytest.raises(train_dir.TrainDirError, match="depth_multiplier=0.5"):
        train_dir.check_compatible(directory, dict(CONFIG, depth_multiplier=1.0), ["a", "b", "c"])
    with pytest.raises(train_dir.TrainDirError, match="image_size=139"):
        train_dir.check_compatible(directory, dict(CONFIG, image_size=299), ["a", "b", "c"])
    assert train_dir.load(directory) == (CONFIG, ["a", "b", "c"])


def test_resolve_errors_are_one_line(tmp_path):
    with pytest.raises(train_dir.TrainDirError, match="no checkpoint in"):
        train_dir.resolve(str(tmp_path))
    with pytest.raises(train_dir.TrainDirError, match="no checkpoint at"):
        train_dir.resolve(str(tmp_path / "model.ckpt-5"))
    with pytest.raises(train_dir.TrainDirError, match="train_config.json is missing"):
        train_dir.load(str(tmp_path))


@pytest.mark.parametrize("name", ["runs/train[bs32]", "runs/what?*", "plain"])
def test_checkpoints_are_found_by_their_files_whatever_the_folder_is_called(tmp_path, name):
    directory = str(tmp_path / name)
    write_train_dir(directory, steps=(3, 10, 7))
    expected = [(step, os.path.join(directory, f"model.ckpt-{step}")) for step in (3, 7, 10)]
    assert train_dir.list_checkpoints(directory) == expected
    assert train_dir.latest_checkpoint(directory) == expected[-1][1]
    assert train_dir.resolve(directory) == (expected[-1][1], directory)
    # One checkpoint by its prefix, or by one of its files (shell tab-completion gives those).
    assert train_dir.resolve(expected[0][1] + ".index") == (expected[0][1], directory)
    assert train_dir.checkpoint_step(expected[1][1]) == 7


def test_a_moved_train_dir_or_a_lost_or_stale_checkpoint_file_changes_nothing(tmp_path):
    original = str(tmp_path / "colab" / "train")
    write_train_dir(original, steps=(5, 9))
    moved = str(tmp_path / "laptop" / "my model")
    os.makedirs(os.path.dirname(moved))
    os.rename(original, moved)
    with open(os.path.join(moved, "checkpoint"), "w") as stream:  # absolute and stale
        stream.write(f'model_checkpoint_path: "{original}/model.ckpt-2"\n')
    assert train_dir.latest_checkpoint(moved) == os.path.join(moved, "model.ckpt-9")
    os.remove(os.path.join(moved, "checkpoint"))
    assert train_dir.latest_checkpoint(moved) == os.path.join(moved, "model.ckpt-9")


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    directory = str(tmp_path / "train")
    write_train_dir(directory, steps=(5, 9))
    data = os.path.join(directory, "model.ckpt-9.data-00000-of-00001")
    with open(data, "r+b") as stream:
        stream.truncate(os.path.getsize(data) // 2)
    assert train_dir.latest_checkpoint(directory) == os.path.join(directory, "model.ckpt-5")
    assert "model.ckpt-9 is unusable" in caplog.text and "truncated" in caplog.text
    with pytest.raises(train_dir.TrainDirError, match="unusable: .*truncated"):
        train_dir.resolve(os.path.join(directory, "model.ckpt-9"))
    os.remove(os.path.join(directory, "model.ckpt-5.data-00000-of-00001"))
    # An index without data is no checkpoint; with nothing usable left, the train_dir is
    # never taken as empty: the error names what is there.
    with pytest.raises(train_dir.TrainDirError, match="no usable checkpoint.*model.ckpt-9"):
        train_dir.latest_checkpoint(directory)


def test_restore_map_reports_missing_and_reshaped_variables(tmp_path):
    directory = str(tmp_path / "train")
    save_checkpoints(directory, [1], shape=(3,))
    with tf.Graph().as_default():
        weights = tf.get_variable("weights", [4])
        other = tf.get_variable("other", [2])
        restore, missing, mismatched = restoring.restore_map(
            os.path.join(directory, "model.ckpt-1"), [weights, other])
    assert restore == {} and missing == ["other"]
    assert mismatched == ["weights [3] in the checkpoint vs [4] in the model"]


HOLD_LOCK = """
import sys, time
sys.path.insert(0, {repo!r})
from nets import train_dir
with train_dir.exclusive({directory!r}):
    print("locked", flush=True)
    time.sleep(60)
"""


HOLD_LOCK_WITH_A_CHILD = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from nets import train_dir
with train_dir.exclusive({directory!r}):
    child = os.fork()  # as a pool worker of preprocess.py is
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_holders_forked_child_does_not_keep_its_lock(tmp_path):
    directory = str(tmp_path)
    holder = start_python(HOLD_LOCK_WITH_A_CHILD.format(repo=REPO, directory=directory),
                          stdout_pipe=True)
    child = int(holder.stdout.readline())
    try:
        holder.wait()
        os.kill(child, 0)  # alive: it would hold the lock still, had it kept its copy
        with train_dir.exclusive(directory):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_one_trainer_at_a_time_and_a_killed_one_leaves_no_stuck_lock(tmp_path):
    directory = str(tmp_path)
    holder = start_python(HOLD_LOCK.format(repo=REPO, directory=directory), stdout_pipe=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(train_dir.TrainDirError, match=f"in use by another train.py \\(pid "
                                                           f"{holder.pid}\\)"):
            with train_dir.exclusive(directory):
                pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while True:  # the OS releases the lock with the process
        try:
            with train_dir.exclusive(directory):
                break
        except train_dir.TrainDirError:
            assert time.time() < deadline
            time.sleep(0.1)
