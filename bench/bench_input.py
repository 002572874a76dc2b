"""Throughput of the training input pipeline alone, against its floor and its former self.

    python3 bench/bench_input.py                    # 299 px crops of 342x342 JPEGs, batch 64
    python3 bench/bench_input.py --batches=10 --rounds=1   # quick check

Contenders, on the same shards (HARRISON-like records: JPEGs of --photo_size, as preprocess.py
stores them at its default --shorter_side=342, written by bench_train.py's records writer), each
in a fresh subprocess, one after the other, in --rounds interleaved rounds (each keeps its best):
- floor: what must happen per image, in the same tf.data skeleton (shuffle, parallel map,
  batch, prefetch): the image bytes parsed, a crop window drawn, `decode_and_crop_jpeg` of that
  window, a bilinear resize; nothing else;
- before: the pipeline before issue 10 (a copy kept below, labelled): crop, decode, resize, then
  per image on the CPU a flip and the colour distortion;
- after: data/pipeline.train_dataset: crop, decode, resize to uint8 per image; the flip and
  colour distortion are left to the model's graph (preprocessing.distort_batch);
- after + distort on this CPU (for information): the same, with distort_batch run on the CPU
  on each batch, which is what a run without an accelerator pays.
Reported: images/s and CPU time per image (process CPU seconds over the timed batches / images:
what transfers to a machine with other cores, e.g. Colab's 2 vCPUs). Targets: after >= 0.9 x
floor and >= 1.5 x before.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONTENDERS = ("floor", "before", "after", "after+distort")


# --- The training pipeline BEFORE issue 10, kept only as this benchmark's "before" -----------
# (data/preprocessing.train_image and data/pipeline.train_dataset as they were: every image
# cropped, decoded, resized, flipped and colour-distorted on the CPU, one at a time.)

def before_train_image(encoded, image_size, seed, min_crop_area, hue_jitter):
    import tensorflow as tf

    from data.preprocessing import (ASPECT_RATIO_RANGE, MIN_OBJECT_COVERED, _to_model_range,
                                    _to_unit_range)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=(min_crop_area, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    image = _to_unit_range(image)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    image = tf.image.stateless_random_brightness(image, 32.0 / 255.0, seed=seeds[2])
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seed=seeds[3])
    if hue_jitter:
        image = tf.image.stateless_random_hue(image, hue_jitter, seed=seeds[4])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seed=seeds[5])
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)

# --- end of the former pipeline ---------------------------------------------------------------


def floor_image(encoded, image_size, seed, min_crop_area):
    """The floor: a distorted-bounding-box window of the photo (drawn as the pipelines draw
    theirs), decoded alone, resized bilinearly (float32); nothing else."""
    import tensorflow as tf

    from data import preprocessing
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(encoded), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=preprocessing.MIN_OBJECT_COVERED,
        aspect_ratio_range=preprocessing.ASPECT_RATIO_RANGE, area_range=(min_crop_area, 1.0),
        max_attempts=100, use_image_if_no_bounding_boxes=True)
    image = tf.io.decode_and_crop_jpeg(encoded, tf.stack([begin[0], begin[1], size[0], size[1]]),
                                       channels=3)
    return tf.image.resize(image, [image_size, image_size], method="bilinear")


def skeleton(records_dir, batch_size, per_record, seed=0, shuffle_buffer=2048):
    """data/pipeline.train_dataset's tf.data structure around another per-record function
    (index, serialized) -> element: the floor and the before pipeline run in it."""
    import tensorflow as tf

    from data import pipeline
    files = pipeline.shard_files(records_dir, "train")
    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat().enumerate()
    dataset = dataset.map(per_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def make_dataset(contender, records_dir, image_size, batch_size, num_tags):
    import tensorflow as tf

    from data import pipeline, preprocessing, records

    def seed_of(index):
        return tf.stack([tf.constant(0, tf.int64), index])

    if contender == "floor":
        def per_record(index, serialized):
            encoded = tf.io.parse_single_example(
                serialized, {records.ENCODED: records.feature_spec()[records.ENCODED]})
            return floor_image(encoded[records.ENCODED], image_size, seed_of(index),
                               preprocessing.MIN_CROP_AREA)
        return skeleton(records_dir, batch_size, per_record)
    if contender == "before":
        def per_record(index, serialized):
            encoded, labels, _ = pipeline._parse(serialized, num_tags)
            return before_train_image(encoded, image_size, seed_of(index),
                                      preprocessing.MIN_CROP_AREA,
                                      preprocessing.HUE_JITTER), labels
        return skeleton(records_dir, batch_size, per_record)
    return pipeline.train_dataset(records_dir, image_size, batch_size, num_tags)


def measure(args):
    """Images/s and CPU ms per image of one contender over --batches after --warmup."""
    import tensorflow as tf

    from data import preprocessing
    from bench_train import NUM_TAGS
    dataset = make_dataset(args.contender, args.records_dir, args.image_size, args.batch_size,
                           NUM_TAGS)
    distort = tf.function(lambda batch: preprocessing.distort_batch(
        batch["images"], batch["draws"], preprocessing.HUE_JITTER))
    iterator = iter(dataset)
    for index in range(args.warmup + args.batches):
        if index == args.warmup:
            wall, cpu = time.perf_counter(), time.process_time()
        batch = next(iterator)
        if args.contender == "after+distort":
            distort(batch).numpy()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = args.batches * args.batch_size
    return images / wall, 1000.0 * cpu / images


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=299)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--photo_size", default="342x342", help="stored JPEGs, WxH")
    parser.add_argument("--records", type=int, default=512, help="distinct records written")
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--records_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:  # a child: measure one contender
        print("RESULT %f %f" % measure(args))
        return
    import bench_train
    records_dir = tempfile.mkdtemp(prefix="bench-input-")
    width, height = (int(v) for v in args.photo_size.split("x"))
    bench_train.write_bench_records(records_dir, images=args.records, size=(width, height))
    best = {}
    for round_index in range(args.rounds):
        for contender in CONTENDERS:
            command = [sys.executable, os.path.abspath(__file__), f"--contender={contender}",
                       f"--records_dir={records_dir}"] + [
                f"--{k}={getattr(args, k)}" for k in
                ("image_size", "batch_size", "warmup", "batches")]
            output = subprocess.run(command, cwd=REPO, check=True, capture_output=True,
                                    text=True).stdout
            rate, cpu_ms = (float(v) for v in output.split("RESULT")[-1].split())
            print(f"round {round_index + 1} {contender:>13}: {rate:7.1f} images/s, "
                  f"{cpu_ms:5.2f} CPU ms/image", flush=True)
            if rate > best.get(contender, (0.0, 0.0))[0]:
                best[contender] = (rate, cpu_ms)
    report(args, best)


def report(args, best):
    floor, before, after = best["floor"][0], best["before"][0], best["after"][0]
    print(f"\n| pipeline ({args.image_size} px crops of {args.photo_size} JPEGs, batch "
          f"{args.batch_size}, {os.cpu_count()} CPUs) | images/s | CPU ms/image | ratio |")
    print("| --- | --- | --- | --- |")
    ratios = {"floor": "1", "before": f"{before / floor:.2f} x floor",
              "after": f"{after / floor:.2f} x floor (target >= 0.9), "
                       f"{after / before:.2f} x before (target >= 1.5)",
              "after+distort": f"{best['after+distort'][0] / floor:.2f} x floor"}
    for contender in CONTENDERS:
        rate, cpu_ms = best[contender]
        print(f"| {contender} | {rate:.1f} | {cpu_ms:.2f} | {ratios[contender]} |")
    print(f"(best of {args.rounds} rounds of {args.batches} batches after {args.warmup})")


if __name__ == "__main__":
    main()
