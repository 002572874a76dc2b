"""HARRISON -> sharded TFRecords, vocabulary, reproducible split, skip report.

    python3 preprocess.py --dataset_dir=/content/HARRISON --output_dir=work/records
    python3 preprocess.py --sample        # the built-in sample dataset, no download

Writes {split}-NNNNN-of-NNNNN.tfrecord shards, vocab.txt, split.csv, tag_stats.csv and
manifest.json (last) into --output_dir. The work is done by data/build_records.py.
"""
import sys

from absl import app, flags

from data import build_records, harrison, sample

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", None,
                    "HARRISON root: the folder holding data_list.txt, tag_list.txt, "
                    "vocab_index.txt and instagram_dataset/.")
flags.DEFINE_string("output_dir", "work/records",
                    "Where the shards, vocab.txt, split.csv, tag_stats.csv and manifest.json go.")
flags.DEFINE_integer("test_size", 5000,
                     "Images in the test split (5000 as in the paper and its re-implementations). "
                     "With --sample the default is 20% of the sample.")
flags.DEFINE_integer("val_size", 0, "Images in a validation split (0: no val split).")
flags.DEFINE_integer("seed", 42, "Seed of the train/val/test split.")
flags.DEFINE_integer("image_size", 299,
                     "Shorter side of the stored images in pixels, aspect ratio kept (299 suits "
                     "Inception v3). With --sample the default is 160.")
flags.DEFINE_integer("workers", None, "Processes decoding and encoding images (default: all cores).")
flags.DEFINE_integer("shard_size", 1024,
                     "Images per shard at most; the number of shards follows (about 30-50 MB "
                     "each at 299 px). With --sample the default is 128.")
flags.DEFINE_bool("overwrite", False,
                  "Replace an existing output made with different settings (all its files are "
                  "removed first). Without it such a run refuses to start.")
flags.DEFINE_bool("sample", False,
                  "Build the built-in sample dataset (drawn shapes and scenes in HARRISON's "
                  "format, deterministic, no download) under --sample_dir and preprocess it.")
flags.DEFINE_string("sample_dir", "work/sample", "Where --sample writes its HARRISON-format dataset.")
flags.DEFINE_integer("sample_images", sample.DEFAULT_IMAGES, "Number of images of the --sample dataset.")

SAMPLE_DEFAULTS = {"image_size": 160, "shard_size": 128}


def _setting(name):
    """The flag's value; with --sample, the sample's default unless the user gave the flag."""
    if FLAGS.sample and not FLAGS[name].present:
        if name == "test_size":
            return max(1, round(0.2 * FLAGS.sample_images))
        if name in SAMPLE_DEFAULTS:
            return SAMPLE_DEFAULTS[name]
    return FLAGS[name].value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if FLAGS.sample:
            if FLAGS.dataset_dir:
                raise harrison.FormatError("give either --sample or --dataset_dir, not both")
            dataset_dir = sample.ensure_sample(FLAGS.sample_dir, FLAGS.sample_images)
            print(f"sample dataset: {dataset_dir} ({FLAGS.sample_images} images)")
        elif FLAGS.dataset_dir:
            dataset_dir = FLAGS.dataset_dir
        else:
            raise harrison.FormatError("--dataset_dir is required (or --sample for the built-in "
                                       "sample dataset)")
        build_records.build_records(
            dataset_dir, FLAGS.output_dir, image_size=_setting("image_size"),
            test_size=_setting("test_size"), val_size=FLAGS.val_size, seed=FLAGS.seed,
            shard_size=_setting("shard_size"), workers=FLAGS.workers, overwrite=FLAGS.overwrite)
    except harrison.FormatError as error:
        print(f"preprocess.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # e.g. an --output_dir that is a file, a full disk
        print(f"preprocess.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("preprocess.py: interrupted; no manifest was written, re-run to finish",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
