"""Training on several devices with tf.distribute (issue 10), on a CPU split in two devices:
the mirrored step against the single-device one; a model trained by two worker processes on
loopback ports (multi-worker), resumed on 1 device then on 2 mirrored replicas, read by
evaluate.py and predict.py.

The step comparison runs in a child process (this file run as a script): the v1 session makes
its two CPU devices from its own config, and the test keeps its TensorFlow out of the way."""
import glob
import json
import os
import socket
import sys
from contextlib import nullcontext

import numpy as np
import pytest

from conftest import (REPO, TINY_TRAIN_FLAGS, assert_one_line_error, check_run,
                      checkpoint_steps, run_script, run_train, start_script)
from train_records import jpeg_bytes, write_records

EVERY_2_STEPS = "--summary_every_steps=2"
TWO_CPUS = "--devices=/cpu:0,/cpu:1"


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    write_records(directory, {"train": 32, "test": 6})
    return directory


def resumed_from(result):
    return [line for line in result.stdout.splitlines() if line.startswith("resuming from")]


def test_a_mirrored_step_is_the_single_device_step(tmp_path):
    # Global batch [h, h] (the same 4 images twice): each of the 2 replicas gets h, so their
    # batch-norm statistics are the whole batch's. Child: see step_comparison below.
    result = check_run(run_script(os.path.relpath(__file__, REPO), str(tmp_path),
                                  env=dict(os.environ, PYTHONPATH=REPO)))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["names"]["mirrored"] == found["names"]["single"]  # slim's names, saved once
    # 2 replicas on [h, h] compute what 1 device computes on h: equal to float32 rounding.
    for kind, difference in found["mirrored_vs_half"].items():
        assert difference <= 1e-5, (kind, difference)
    # ... and 1 device on [h, h] is the same step up to the float32 noise of this tiny random
    # network (batch-norm statistics of near-identical activations amplify the rounding of
    # sums taken in another order: 1 device on h vs on [h, h] differ as much; measured: loss
    # 1e-4 to 1e-3 relative, update 0.4% of its norm).
    assert found["loss"]["mirrored"] == pytest.approx(found["loss"]["single"], rel=5e-3)
    assert found["update"]["relative_difference"] < 0.02, found["update"]
    assert found["update"]["cosine"] > 0.999, found["update"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_two_workers(records_dir, train_dir, *extra):
    """train.py --distribute=multi_worker as two processes (TF_CONFIG, loopback ports);
    returns [(stdout, stderr) of worker 0 (the chief), of worker 1]."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in (0, 1):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(start_script("train.py", f"--records_dir={records_dir}",
                                    f"--train_dir={train_dir}", *TINY_TRAIN_FLAGS,
                                    EVERY_2_STEPS, "--distribute=multi_worker", *extra,
                                    env=env))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stdout[-2000:] + stderr[-3000:]
        assert "multi_worker over 2 replicas" in stdout
    return outputs


def test_a_model_trained_on_2_workers_resumes_on_1_device_then_2_replicas(records_dir,
                                                                           tmp_path):
    train_dir = str(tmp_path / "train")
    chief, other = train_two_workers(records_dir, train_dir, "--max_steps=4")
    assert f"saved {train_dir}/model.ckpt-4" in chief[0]
    assert "saved step 4 (by the chief)" in other[0]  # its copy went to a temporary folder
    assert checkpoint_steps(train_dir) == [4]
    assert len(glob.glob(os.path.join(train_dir, "events.out.tfevents.*"))) == 1
    one = check_run(run_train(records_dir, train_dir, EVERY_2_STEPS, "--distribute=none",
                              "--max_steps=6"))
    assert resumed_from(one) == [f"resuming from {train_dir}/model.ckpt-4 (step 4)"]
    assert "one device" in one.stdout
    two = check_run(run_train(records_dir, train_dir, EVERY_2_STEPS, TWO_CPUS,
                              "--max_steps=8"))
    assert resumed_from(two) == [f"resuming from {train_dir}/model.ckpt-6 (step 6)"]
    assert "mirrored over 2 replicas" in two.stdout
    # The ordinary scripts read the distributed run's checkpoints as any other.
    evaluated = check_run(run_script("evaluate.py", f"--model={train_dir}",
                                     f"--eval_dir={tmp_path / 'eval'}"))
    assert "model.ckpt-8" in evaluated.stderr
    assert os.path.isfile(tmp_path / "eval" / "metrics.json")
    photo = tmp_path / "red.jpg"
    photo.write_bytes(jpeg_bytes(np.full((40, 56, 3), (230, 20, 20), np.uint8)))
    predicted = check_run(run_script("predict.py", f"--model={train_dir}", str(photo)))
    assert predicted.stdout.startswith(f"{photo}: #")


def test_a_batch_that_does_not_split_and_a_missing_cluster_are_one_line_errors(records_dir,
                                                                               tmp_path):
    odd = run_train(records_dir, str(tmp_path / "odd"), EVERY_2_STEPS, TWO_CPUS,
                    "--batch_size=7")
    assert_one_line_error(odd, "train.py", "does not split evenly across 2 replicas")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    alone = run_train(records_dir, str(tmp_path / "alone"), EVERY_2_STEPS,
                      "--distribute=multi_worker", env=env)
    assert_one_line_error(alone, "train.py", "needs TF_CONFIG")


# ------------------------------------------------------------------- child: the step comparison

def step_comparison(out):
    """One training step from the same weights: 1 device on [h, h], 2 mirrored replicas on
    [h, h], 1 device on h. Prints JSON: differences of the saved variables and of the updates."""
    import tensorflow.compat.v1 as tf

    from nets import distribution, optimization, recipe, train_step, training
    tf.disable_eager_execution()
    settings = recipe.settings("cpu", image_size=75, depth_multiplier=0.1, batch_size=8,
                               dropout_keep_prob=1.0, warmup_steps=0, records_dir=out,
                               moving_average_decay=0.5)
    rng = np.random.default_rng(0)
    half = {"images": rng.integers(0, 256, (4, 75, 75, 3), dtype=np.uint8),
            "draws": rng.uniform(size=(4, 5)).astype(np.float32),
            "labels": (rng.uniform(size=(4, 5)) < 0.4).astype(np.float32)}
    whole = {name: np.concatenate([value, value]) for name, value in half.items()}

    def step(name, batch, devices=None):
        distributed = distribution.Distribution("mirrored" if devices else "none", devices)
        strategy = distributed.strategy
        with tf.Graph().as_default(), strategy.scope() if strategy else nullcontext():
            tf.set_random_seed(0)
            run = train_step.build_steps(dict(settings, batch_size=len(batch["images"])),
                                         tf.data.Dataset.from_tensors(batch).repeat(), 5,
                                         optimization.stage(settings, 0, 100, 10), False,
                                         strategy)
            saver = tf.train.Saver()
            start = os.path.join(out, "start")
            restore = (training.resume_saver(start, run["averages"])[0]
                       if os.path.exists(start + ".index") else None)
            config = distributed.session_config()
            with tf.Session(config=config) as session:
                session.run([tf.global_variables_initializer()] + run["initializers"])
                if restore:
                    restore.restore(session, start)
                else:
                    saver.save(session, start)
                loss = session.run([run["loss"], run["train_op"]])[0]
                saver.save(session, os.path.join(out, name))
        return float(loss)

    loss = {"single": step("single", whole),
            "mirrored": step("mirrored", whole, ["/cpu:0", "/cpu:1"]),
            "half": step("half", half)}
    readers = {name: tf.train.load_checkpoint(os.path.join(out, name))
               for name in ("start", "single", "mirrored", "half")}
    names = sorted(readers["single"].get_variable_to_shape_map())
    average = "ExponentialMovingAverage"
    kinds = {"weights": lambda n: "RMSProp" not in n and "moving" not in n and average not in n
             and n != "global_step",
             "batch-norm statistics": lambda n: "moving" in n and average not in n,
             "optimizer slots": lambda n: "RMSProp" in n,
             "moving averages": lambda n: average in n}

    def largest(a, b, kind):
        return max(float(np.abs(readers[a].get_tensor(n) - readers[b].get_tensor(n)).max())
                   for n in names if kinds[kind](n))

    def update(name):
        return np.concatenate([(readers[name].get_tensor(n) - readers["start"].get_tensor(n))
                               .ravel() for n in names if kinds["weights"](n)])

    single, mirrored = update("single"), update("mirrored")
    print(json.dumps({
        "names": {"single": names,
                  "mirrored": sorted(readers["mirrored"].get_variable_to_shape_map())},
        "loss": loss, "mirrored_vs_half": {k: largest("mirrored", "half", k) for k in kinds},
        "update": {"relative_difference": float(np.linalg.norm(mirrored - single)
                                                / np.linalg.norm(single)),
                   "cosine": float(mirrored @ single / np.linalg.norm(mirrored)
                                   / np.linalg.norm(single))}}))


if __name__ == "__main__":
    step_comparison(sys.argv[1])
