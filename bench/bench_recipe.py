"""Rehearsal of the GPU recipe at HARRISON's scale, on a CPU: the whole orchestration of
`train.py --warm_start=... ` (linear probe then fine-tuning, validation-picked checkpoints) on
the real lists with generated images, tiny images and network, a few steps per stage.

    python3 bench/bench_recipe.py                # full scale: 57,383 entries, 997 tags
    python3 bench/bench_recipe.py --limit=5000   # a quick check on the first 5,000 entries

What it runs, each step as a user runs it (subprocesses), and reports (time, peak memory of the
step, disk):
1. preprocess.py on the full-scale stand-in of bench/bench_preprocess.py (the real lists, a
   generated 640x640 JPEG at every path), with the defaults' splits: test 5,000, val 2,500, the
   rest train; small stored images (--shorter_side) to keep it quick;
2. a stand-in for the ImageNet checkpoint: train.py from scratch for --base_steps steps;
3. the recipe: train.py --warm_start=<2> with the probe (its features cache of train + val, the
   head fitted for --probe_epochs) and --steps fine-tuning steps with a checkpoint and a
   validation at the end;
4. evaluate.py on the test split with the checkpoint train.py kept.
The numbers are this machine's CPU at tiny sizes: they check that the orchestration holds at
HARRISON's scale (997 tags, 49,881 / 2,500 / 5,000 images) and size its caches, not the GPU's speed.
"""
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_preprocess  # noqa: E402  (its stand-in builder)

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", os.path.join(REPO, "work", "bench", "recipe"),
                    "Records and train_dirs of the rehearsal (removed first).")
# bench_preprocess's flags (--lists_dir, --standin_dir, --limit, --image_size: preprocess.py's
# --shorter_side) come with it; these are the rehearsal's own.
flags.DEFINE_integer("input_size", 75, "--image_size of train.py.")
flags.DEFINE_float("depth_multiplier", 0.1, "--depth_multiplier of train.py.")
flags.DEFINE_integer("batch_size", 32, "--batch_size of train.py.")
flags.DEFINE_integer("base_steps", 20, "Steps of the ImageNet stand-in.")
flags.DEFINE_integer("probe_epochs", 3, "--probe_epochs of the rehearsal.")
flags.DEFINE_integer("steps", 20, "Fine-tuning steps of the rehearsal.")
flags.DEFINE_bool("reuse_records", False, "Keep the records of an earlier rehearsal (skips "
                  "step 1).")


def run(step, command):
    """Runs a script; returns (seconds, peak RSS in MB of the children so far, stdout)."""
    start = time.time()
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True,
                            text=True)
    seconds = time.time() - start
    if result.returncode:
        sys.exit(f"{step} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{step}: {seconds:.0f} s, peak memory of the largest step so far {peak:.0f} MB",
          flush=True)
    return seconds, peak, result.stdout


def folder_mb(path):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(glob.escape(path), "**"),
                                                      recursive=True) if os.path.isfile(p)) / 2**20


def main(argv):
    del argv
    if not FLAGS["image_size"].present:
        FLAGS.image_size = 96  # small stored images: the rehearsal checks orchestration, not pixels
    standin = bench_preprocess.limited_root(
        bench_preprocess.build_standin(FLAGS.lists_dir, FLAGS.standin_dir), FLAGS.limit)
    records, base, recipe = (os.path.join(FLAGS.work_dir, name)
                             for name in ("records", "base", "recipe"))
    reuse = FLAGS.reuse_records and os.path.isfile(os.path.join(records, "manifest.json"))
    for folder in ([base, recipe] if reuse else [FLAGS.work_dir]):
        shutil.rmtree(folder, ignore_errors=True)
    model = [f"--image_size={FLAGS.input_size}", f"--depth_multiplier={FLAGS.depth_multiplier}",
             f"--batch_size={FLAGS.batch_size}", f"--records_dir={records}"]
    if not reuse:
        run("preprocess.py", ["preprocess.py", f"--dataset_dir={standin}",
                              f"--records_dir={records}", f"--shorter_side={FLAGS.image_size}"])
    with open(os.path.join(records, "manifest.json"), encoding="utf-8") as stream:
        manifest = json.load(stream)
    print("splits: " + ", ".join(f"{split} {info['images']}"
                                 for split, info in manifest["splits"].items()))
    run("stand-in for ImageNet", ["train.py", *model, f"--train_dir={base}",
                                  f"--max_steps={FLAGS.base_steps}", "--probe_epochs=0",
                                  f"--save_every_steps={FLAGS.base_steps}"])
    seconds, _, stdout = run("recipe (probe + fine-tuning)", [
        "train.py", *model, f"--train_dir={recipe}", f"--warm_start={base}",
        f"--probe_epochs={FLAGS.probe_epochs}", f"--max_steps={FLAGS.steps}",
        f"--save_every_steps={FLAGS.steps}"])
    for line in stdout.splitlines():
        if line.startswith(("linear probe:", "val at step", "saved ")):
            print("  " + line)
    print(f"features cache: {folder_mb(os.path.join(recipe, 'probe')):.1f} MB "
          f"({len(glob.glob(os.path.join(recipe, 'probe', 'features-*.npz')))} chunks); "
          f"train_dir in all: {folder_mb(recipe):.1f} MB")
    _, _, stdout = run("evaluate.py (test split)", ["evaluate.py", f"--model={recipe}",
                                                     "--batch_size=128",
                                                     "--contact_sheet_images=0"])
    for line in stdout.splitlines():
        if line.startswith(("precision@1", "recall@5", "accuracy@5", "map ")):
            print("  " + line)


if __name__ == "__main__":
    app.run(main)
