"""Benchmark: preprocess.py on a full-scale HARRISON stand-in, against the single-core floor x cores.

The stand-in is the real lists (../shared/harrison: 57,383 entries, 997 tags) with a 640x640
JPEG (Instagram's size) at every path: a few distinct generated photos, hard-linked at every
path (real files, real decoding), and the two entries that are corrupt in the real archive
written truncated. It is cached under --standin_dir.

Printed figures, measured in the same run:
- floor: the same decode + resize + encode (data.image_files.convert_image) in a plain single-process
  loop, in images/s, times the number of cores. It is sampled before, during and after the run:
  every --sample_every seconds preprocess.py is frozen (SIGSTOP), the floor measured, and
  preprocess.py resumed, so both see the same background load of a shared machine;
- the same floor as `cores` plain loops side by side (as many busy processes as preprocess.py
  has workers, hence the same share of a machine other jobs also use);
- preprocess.py: images / time of the whole command (start-up, TF import, listing, split,
  conversion, shard writing, metadata), frozen time excluded, as a user sees it;
- CPU time per image of both (less sensitive to other jobs than wall time).
Target: preprocess.py >= 0.85 x floor.

    python3 bench/bench_preprocess.py              # full scale (57,383 images)
    python3 bench/bench_preprocess.py --limit=3000 # a quick check on the first 3,000 entries
"""
import io
import multiprocessing
import os
import resource
import signal
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image, ImageFilter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data import atomic, build_records, harrison, image_files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("lists_dir", os.path.join(REPO, "..", "shared", "harrison"),
                    "Folder with the real data_list.txt, tag_list.txt and vocab_index.txt.")
flags.DEFINE_string("standin_dir", os.path.join(REPO, "work", "bench", "harrison_standin"),
                    "Cache of the stand-in dataset.")
flags.DEFINE_string("output_dir", os.path.join(REPO, "work", "bench", "records"),
                    "Where preprocess.py writes (removed afterwards unless --keep).")
flags.DEFINE_integer("limit", 0, "Only the first N entries of the lists (0: all).")
flags.DEFINE_integer("image_size", 299, "--shorter_side given to preprocess.py and the floor loop.")
flags.DEFINE_integer("floor_images", 150, "Images converted by each floor measurement.")
flags.DEFINE_float("sample_every", 10.0, "Seconds of preprocess.py between two floor samples.")
flags.DEFINE_integer("workers", None, "Cores (default: all available).")
flags.DEFINE_bool("keep", False, "Keep the records written by preprocess.py.")

DISTINCT_PHOTOS = 64
CORRUPT_ROWS = (25526, 50762)  # corrupt in the real archive


def _photo(seed):
    """A 640x640 photo-like JPEG: smooth shapes plus fine texture, about Instagram's byte size."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
        (640, 640), Image.BICUBIC)
    texture = rng.normal(0, 12, (640, 640, 3))
    pixels = np.clip(np.asarray(base, dtype=np.float32) + texture, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _with_comment(jpeg, text):
    """`jpeg` with a COM segment after its SOI marker: other bytes, the same pixels."""
    comment = text.encode("ascii")
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def build_standin(lists_dir, standin_dir):
    """The full stand-in (cached): lists copied, a file of its own at every listed path (one of
    DISTINCT_PHOTOS photos, made unique by a JPEG comment naming its row), as the real
    dataset's ~6 GB of separate files; the CORRUPT_ROWS truncated."""
    done = os.path.join(standin_dir, ".complete")
    if os.path.isfile(done):
        return standin_dir
    print(f"building the stand-in under {standin_dir} (once, about 6 GB)...", flush=True)
    shutil.rmtree(standin_dir, ignore_errors=True)
    os.makedirs(standin_dir)
    for name in (harrison.DATA_LIST, harrison.TAG_LIST, harrison.VOCAB_INDEX):
        shutil.copyfile(os.path.join(lists_dir, name), os.path.join(standin_dir, name))
    photos = [_photo(index) for index in range(DISTINCT_PHOTOS)]
    paths, _ = harrison.read_lists(standin_dir)
    for row, path in enumerate(paths):
        target = os.path.join(standin_dir, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = _with_comment(photos[row % DISTINCT_PHOTOS], f"stand-in row {row}")
        with open(target, "wb") as handle:
            handle.write(data[:len(data) // 3] if row in CORRUPT_ROWS else data)
    open(done, "w").close()
    return standin_dir


def limited_root(standin_dir, limit):
    """A dataset root with the first `limit` list entries, sharing the stand-in's images."""
    if not limit:
        return standin_dir
    root = f"{standin_dir}_first{limit}"
    if not os.path.isdir(root):
        os.makedirs(root)
        paths, tag_lines = harrison.read_lists(standin_dir)
        atomic.write_text(os.path.join(root, harrison.DATA_LIST),
                                   "".join(p + "\n" for p in paths[:limit]))
        atomic.write_text(os.path.join(root, harrison.TAG_LIST),
                                   "".join(t + "\n" for t in tag_lines[:limit]))
        shutil.copyfile(os.path.join(standin_dir, harrison.VOCAB_INDEX),
                        os.path.join(root, harrison.VOCAB_INDEX))
        os.symlink(os.path.join(standin_dir, "instagram_dataset"),
                   os.path.join(root, "instagram_dataset"))
    return root


def floor_rate(root, count, image_size):
    """(images/s, CPU s/image) of the plain loop: the same convert_image work, one process."""
    paths, _ = harrison.read_lists(root)
    chosen = [os.path.join(root, p) for row, p in enumerate(paths[:count + 2])
              if row not in CORRUPT_ROWS][:count]
    image_files.convert_image(chosen[0], image_size)  # warm the page cache and PIL
    start, cpu = time.perf_counter(), time.process_time()
    for path in chosen:
        image_files.convert_image(path, image_size)
    return (len(chosen) / (time.perf_counter() - start),
            (time.process_time() - cpu) / len(chosen))


def _convert_all(paths, image_size):
    for path in paths:
        image_files.convert_image(path, image_size)


def parallel_floor_rate(root, count, image_size, cores):
    """Images/s of `cores` plain loops run side by side (no pool, no records): the floor as the
    OS scheduler sees it, with as many busy processes as preprocess.py's workers."""
    paths, _ = harrison.read_lists(root)
    chosen = [os.path.join(root, p) for row, p in enumerate(paths[:count + 2])
              if row not in CORRUPT_ROWS][:count]
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_convert_all, args=(chosen, image_size))
                 for _ in range(cores)]
    start = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return cores * len(chosen) / (time.perf_counter() - start)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(entries, wall, cpu, cores, singles, sides, floor_cpus):
    """Prints the run's figures against the floor samples."""
    manifest = harrison.load_manifest(FLAGS.output_dir)
    rate = entries / wall
    single, side = float(np.mean(singles)), float(np.mean(sides))
    floor = single * cores
    print(f"\nentries {entries}, records {manifest['images']}, skipped {len(manifest['skipped'])} "
          f"({manifest['skipped_by_reason']}), image_size {FLAGS.image_size}, cores {cores}, "
          f"{len(singles)} floor samples, load average {os.getloadavg()[0]:.1f}")
    print(f"floor: single-process loop {single:.1f} img/s (samples {min(singles):.0f}-"
          f"{max(singles):.0f}) x {cores} cores = {floor:.1f} img/s")
    print(f"preprocess.py: {entries} images in {wall:.1f} s (start-up included) = {rate:.1f} img/s "
          f"-> {rate / floor:.2f} x floor (target >= 0.85)")
    print(f"floor as {cores} plain loops side by side (the same number of busy processes as "
          f"preprocess.py, so the same share of a shared machine): {side:.1f} img/s "
          f"-> preprocess.py {rate / side:.2f} x that")
    floor_cpu = float(np.mean(floor_cpus))
    print(f"CPU per image: floor loop {1000 * floor_cpu:.2f} ms, preprocess.py (all processes, "
          f"start-up included) {1000 * cpu / entries:.2f} ms -> floor/preprocess "
          f"{floor_cpu * entries / cpu:.2f}")


def main(argv):
    del argv
    if not os.path.isfile(os.path.join(FLAGS.lists_dir, harrison.TAG_LIST)):
        sys.exit(f"real HARRISON lists not found in {FLAGS.lists_dir}")
    cores = FLAGS.workers or build_records.default_workers()
    root = limited_root(build_standin(FLAGS.lists_dir, FLAGS.standin_dir), FLAGS.limit)
    entries = len(harrison.read_lists(root)[0])
    test_size = min(5000, entries // 10)
    singles, sides, floor_cpus = [], [], []
    floor_children_cpu = 0.0

    def sample_floor():
        nonlocal floor_children_cpu
        rate, cpu = floor_rate(root, FLAGS.floor_images, FLAGS.image_size)
        singles.append(rate)
        floor_cpus.append(cpu)
        before = _children_cpu()
        sides.append(parallel_floor_rate(root, FLAGS.floor_images, FLAGS.image_size, cores))
        floor_children_cpu += _children_cpu() - before

    sample_floor()
    shutil.rmtree(FLAGS.output_dir, ignore_errors=True)
    command = [sys.executable, os.path.join(REPO, "preprocess.py"), f"--dataset_dir={root}",
               f"--records_dir={FLAGS.output_dir}", f"--shorter_side={FLAGS.image_size}",
               f"--test_size={test_size}", f"--workers={cores}"]
    print("+", " ".join(command), flush=True)
    cpu_start = _children_cpu()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    # The machine is shared: every --sample_every seconds, freeze preprocess.py (its whole process
    # group), measure the floor, and resume it. Floor and preprocess.py then see the same
    # background load, and the frozen time is not counted.
    paused, next_sample = 0.0, start + FLAGS.sample_every
    while process.poll() is None:
        time.sleep(0.05)
        if time.perf_counter() >= next_sample and process.poll() is None:
            frozen = time.perf_counter()
            os.killpg(process.pid, signal.SIGSTOP)
            try:
                sample_floor()
            finally:
                os.killpg(process.pid, signal.SIGCONT)
            paused += time.perf_counter() - frozen
            next_sample = time.perf_counter() + FLAGS.sample_every
    wall = time.perf_counter() - start - paused
    if process.returncode:
        sys.exit(f"preprocess.py failed with exit code {process.returncode}")
    cpu = _children_cpu() - cpu_start - floor_children_cpu
    sample_floor()

    report(entries, wall, cpu, cores, singles, sides, floor_cpus)
    if not FLAGS.keep:
        shutil.rmtree(FLAGS.output_dir, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
