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

from bench_train import NUM_TAGS, build_floor_steps  # noqa: E402 (after the path)


def build_seconds(settings):
    """CPU seconds of one build of train.py's step graph (bench_train's floor) in a new graph."""
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default():
        start = time.process_time()
        build_floor_steps(settings)
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
    build_seconds(settings)  # the first build also imports and compiles lazily
    with_it = compat.graph_equality
    best = {}
    for round_index in range(args.rounds):
        for name, context in (("graph_equality", with_it),
                              ("without", contextlib.nullcontext)):
            compat.graph_equality = context
            seconds = build_seconds(settings)
            best[name] = min(best.get(name, seconds), seconds)
            print(f"round {round_index + 1} {name:>14}: {seconds:6.2f} s CPU", flush=True)
    compat.graph_equality = with_it
    print(f"best: graph_equality {best['graph_equality']:.2f} s, without {best['without']:.2f} s"
          f"; ratio {best['graph_equality'] / best['without']:.3f} (target < 1)")
    print(f"settings: {args.image_size} px, depth {args.depth_multiplier}, batch 8, {NUM_TAGS} "
          f"tags, best of {args.rounds} rounds, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
