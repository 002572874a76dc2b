"""Training throughput of train.py against its floor and a Keras peer, in one run.

    python3 bench/bench_train.py                 # full model: 299x299, depth 1.0, batch 8
    python3 bench/bench_train.py --steps=5 --image_size=139 --depth_multiplier=0.25  # quick

Three contenders train the same model size on the same data, each in a fresh subprocess, one
after the other (so they never share the CPU):
- floor: train.py's training step (nets/train_step.py: the batched augmentation, model, loss,
  RMSProp) fed one constant, in-memory batch: the model's own speed, no input pipeline at all;
- train.py: the real script on TFRecords of HARRISON-sized JPEGs (decode, inception
  augmentation, shuffle, prefetch), its images/s read from its TensorBoard summaries;
- keras: `keras.applications.InceptionV3` (weights=None) + a 997-way sigmoid head,
  `model.fit` on the same tf.data pipeline (data/pipeline.py), binary cross-entropy, RMSProp.
Each is timed over --steps steps after --warmup steps, in --rounds interleaved rounds, keeping
each contender's best round (other processes on a shared machine only ever slow one down).
Targets: train.py >= 0.95 x floor (the
input never starves the model) and > keras.
"""
import argparse
import glob
import io
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
NUM_TAGS = 997


def write_bench_records(records_dir, images=64, size=(480, 360), seed=0):
    """TFRecords of smooth random photos at HARRISON's typical size with ~4.5 random tags."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from data import harrison, records
    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(records_dir, "train-00000-of-00001.tfrecord")) as out:
        for index in range(images):
            small = rng.integers(0, 256, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
            photo = Image.fromarray(small).resize(size, Image.BICUBIC)
            buffer = io.BytesIO()
            photo.save(buffer, format="JPEG", quality=90)
            tags = sorted(rng.choice(NUM_TAGS, size=rng.integers(2, 8), replace=False).tolist())
            out.write(records.encode_example(buffer.getvalue(), size[1], size[0],
                                             f"bench/{index}.jpg", index, tags))
    harrison.write_vocab(os.path.join(records_dir, harrison.VOCAB_FILE),
                         [f"tag{i}" for i in range(NUM_TAGS)])
    with open(os.path.join(records_dir, harrison.MANIFEST_FILE), "w") as f:
        json.dump({"vocab_size": NUM_TAGS, "splits": {"train": {
            "images": images, "shards": ["train-00000-of-00001.tfrecord"]}}}, f)


def build_floor_steps(settings):
    """train.py's training step (nets/train_step.py) on one constant random batch of
    `settings`' size, NUM_TAGS tags, in the default graph: its dict of tensors."""
    import numpy as np
    import tensorflow.compat.v1 as tf

    from nets import optimization, train_step
    size, batch_size = settings["image_size"], settings["batch_size"]
    rng = np.random.default_rng(0)
    batch = {"images": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
             "draws": rng.uniform(size=(batch_size, 5)).astype(np.float32),
             "labels": (rng.uniform(size=(batch_size, NUM_TAGS)) < 0.005).astype(np.float32)}
    return train_step.build_steps(settings, tf.data.Dataset.from_tensors(batch).repeat(),
                                  NUM_TAGS, optimization.stage(settings, 0, 1000, 100),
                                  mixed_precision=False)


def run_floor(args):
    """train.py's graph on a constant batch; returns images/s."""
    import tensorflow.compat.v1 as tf

    from nets import distribution, recipe
    # The default (gpu) recipe, sized by the bench's arguments.
    settings = recipe.settings("gpu", image_size=args.image_size,
                               depth_multiplier=args.depth_multiplier, batch_size=args.batch_size)
    with tf.Graph().as_default():
        model = build_floor_steps(settings)
        config = distribution.Distribution("none").session_config()
        with tf.Session(config=config) as session:
            session.run([tf.global_variables_initializer()] + model["initializers"])
            for _ in range(args.warmup):
                session.run(model["train_op"])
            start = time.perf_counter()
            for _ in range(args.steps):
                session.run(model["train_op"])
            return args.steps * args.batch_size / (time.perf_counter() - start)


def run_train_py(args, records_dir):
    """train.py itself; its images/s over the steps after the warm-up, from its summaries."""
    from tensorflow.core.util import event_pb2
    import tensorflow as tf
    train_dir = tempfile.mkdtemp(prefix="bench-train-")
    # One summary closes the warm-up window, the next one covers exactly the timed steps.
    command = [sys.executable, os.path.join(REPO, "train.py"), f"--records_dir={records_dir}",
               f"--train_dir={train_dir}", f"--image_size={args.image_size}",
               f"--depth_multiplier={args.depth_multiplier}", f"--batch_size={args.batch_size}",
               f"--max_steps={args.warmup + args.steps}", f"--summary_every_steps={args.warmup}",
               "--save_every_steps=1000000", "--save_every_minutes=1000000",
               "--shuffle_buffer=64"]
    if args.steps % args.warmup:
        raise SystemExit("--steps must be a multiple of --warmup (train.py's summary period)")
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    speeds = []
    for path in glob.glob(os.path.join(train_dir, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            speeds += [(event.step, v.simple_value) for v in event.summary.value
                       if v.tag == "images_per_second"]
    timed = [speed for step, speed in sorted(speeds) if step > args.warmup]
    # Windows of equal length: the mean of their rates is the overall rate's harmonic twin;
    # use the harmonic mean so it equals images / total time.
    return len(timed) / sum(1.0 / s for s in timed)


def run_keras(args, records_dir):
    """keras.applications.InceptionV3 + sigmoid head, model.fit on data/pipeline.py's input."""
    import keras

    from data import pipeline, preprocessing
    backbone = keras.applications.InceptionV3(
        weights=None, include_top=False, pooling="avg",
        input_shape=(args.image_size, args.image_size, 3))
    model = keras.Sequential([backbone, keras.layers.Dense(NUM_TAGS, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1.0),
                  loss="binary_crossentropy")
    # The CPU part of the input, then the batched flip and colour train.py runs in its graph.
    dataset = pipeline.train_dataset(records_dir, args.image_size, args.batch_size, NUM_TAGS,
                                     shuffle_buffer=64).map(
        lambda batch: (preprocessing.distort_batch(batch["images"], batch["draws"]),
                       batch["labels"]))

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == args.warmup:
                self.start = time.perf_counter()
            if batch + 1 == args.warmup + args.steps:
                self.seconds = time.perf_counter() - self.start

    timer = Timer()
    model.fit(dataset, steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0,
              callbacks=[timer])
    return args.steps * args.batch_size / timer.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=299)
    parser.add_argument("--depth_multiplier", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=4)  # also train.py's summary period
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--contender", choices=["floor", "train", "keras"], help=argparse.SUPPRESS)
    parser.add_argument("--records_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:  # a child: measure one contender, print its images/s
        speed = {"floor": lambda: run_floor(args),
                 "train": lambda: run_train_py(args, args.records_dir),
                 "keras": lambda: run_keras(args, args.records_dir)}[args.contender]()
        print(f"IMAGES_PER_SECOND {speed}")
        return
    records_dir = tempfile.mkdtemp(prefix="bench-records-")
    write_bench_records(records_dir)
    results = {}
    # Rounds interleave the contenders; each keeps its best round, which filters out the
    # slowdowns other processes on a shared machine cause.
    for round_index in range(args.rounds):
        for contender in ("floor", "train", "keras"):
            command = [sys.executable, os.path.abspath(__file__), f"--contender={contender}",
                       f"--records_dir={records_dir}"] + [
                           f"--{k}={getattr(args, k)}" for k in
                           ("image_size", "depth_multiplier", "batch_size", "warmup", "steps")]
            output = subprocess.run(command, cwd=REPO, check=True, capture_output=True,
                                    text=True).stdout
            speed = float(output.split("IMAGES_PER_SECOND")[-1])
            results[contender] = max(results.get(contender, 0.0), speed)
            print(f"round {round_index + 1} {contender:>6}: {speed:7.2f} images/s", flush=True)
    for contender, speed in results.items():
        print(f"best {contender:>6}: {speed:7.2f} images/s")
    print(f"train.py / floor = {results['train'] / results['floor']:.3f} (target >= 0.95)")
    print(f"train.py / keras = {results['train'] / results['keras']:.3f} (target > 1)")
    print(f"settings: {args.image_size}x{args.image_size}, depth {args.depth_multiplier}, batch "
          f"{args.batch_size}, {args.steps} timed steps after {args.warmup}, best of "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
