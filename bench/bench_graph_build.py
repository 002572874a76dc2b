"""How long train.py takes to build its training step graph, with and without
nets/compat.graph_equality, in one process (the two interleaved, best of --rounds each).

    python3 bench/bench_graph_build.py                 # the tests' model: 75 px, depth 0.1
    python3 bench/bench_graph_build.py --image_size=299 --depth_multiplier=1.0

Building the graph is Python work, the same for every image size and depth: the first thing
every train.py run pays (and every test that runs one). Target: graph_equality saves time
(ratio < 1).
"""
import argparse
import contextlib
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build_seconds(settings, num_tags):
    """CPU seconds of one build of train.py's step graph (nets/train_step.py) in a new graph."""
    import numpy as np
    import tensorflow.compat.v1 as tf

    from nets import optimization, train_step
    size, batch_size = settings["image_size"], settings["batch_size"]
    rng = np.random.default_rng(0)
    batch = {"images": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
             "draws": rng.uniform(size=(batch_size, 5)).astype(np.float32),
             "labels": np.zeros((batch_size, num_tags), np.float32)}
    with tf.Graph().as_default():
        start = time.process_time()
        train_step.build_steps(settings, tf.data.Dataset.from_tensors(batch).repeat(), num_tags,
                               optimization.stage(settings, 0, 1000, 100), False)
        return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=75)
    parser.add_argument("--depth_multiplier", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import tensorflow.compat.v1 as tf

    from nets import compat, recipe
    tf.disable_eager_execution()  # as train.py
    settings = recipe.settings("cpu", image_size=args.image_size,
                               depth_multiplier=args.depth_multiplier, batch_size=8,
                               records_dir="unused")
    build_seconds(settings, 997)  # the first build also imports and compiles lazily
    with_it = compat.graph_equality
    best = {}
    for round_index in range(args.rounds):
        for name, context in (("graph_equality", with_it),
                              ("without", contextlib.nullcontext)):
            compat.graph_equality = context
            seconds = build_seconds(settings, 997)
            best[name] = min(best.get(name, seconds), seconds)
            print(f"round {round_index + 1} {name:>14}: {seconds:6.2f} s CPU", flush=True)
    compat.graph_equality = with_it
    print(f"best: graph_equality {best['graph_equality']:.2f} s, without {best['without']:.2f} s"
          f"; ratio {best['graph_equality'] / best['without']:.3f} (target < 1)")
    print(f"settings: {args.image_size} px, depth {args.depth_multiplier}, batch 8, 997 tags, "
          f"best of {args.rounds} rounds, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
