"""Photos and their tags -> sharded TFRecords, vocabulary, reproducible split, skip report.

    python3 preprocess.py --dataset_dir=/content/HARRISON --records_dir=work/records
    python3 preprocess.py --sample        # the built-in sample dataset, no download
    python3 preprocess.py --table=my_photos/photos.csv     # your photos: a table of tags
    python3 preprocess.py --photos_dir=my_photos           # your photos: their keywords

Writes {split}-NNNNN-of-NNNNN.tfrecord shards, vocab.txt, split.csv, tag_stats.csv and
manifest.json (last) into --records_dir. The work is done by data/build_records.py.
"""
import sys
import time

from absl import flags

import cli
from data import build_records, process_pool, sample, sources, vocabulary

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", None,
                    "HARRISON root: the folder holding data_list.txt, tag_list.txt, "
                    "vocab_index.txt and instagram_dataset/.")
flags.DEFINE_string("table", None,
                    "Your own photos instead of HARRISON: a CSV (or TSV) or JSON Lines file, one "
                    "row a photo, with the columns path and tags or caption (its #hashtags).")
flags.DEFINE_string("images_dir", None, "The folder --table's paths are relative to (default: "
                    "the table's folder).")
flags.DEFINE_string("table_encoding", "utf-8",
                    "--table's text encoding when it has no byte order mark (e.g. cp1252 for "
                    "Excel's CSV on Windows).")
flags.DEFINE_bool("allow_outside_paths", False,
                  "Let --table name photos outside its images folder (absolute or '..' paths); "
                  "without it such rows are skipped and reported.")
flags.DEFINE_string("photos_dir", None,
                    "Your own photos instead of HARRISON: a folder (and its subfolders) of "
                    "photos tagged by their embedded keywords (IPTC Keywords, XMP dc:subject).")
flags.DEFINE_integer("min_tag_photos", vocabulary.DEFAULT_MIN_PHOTOS,
                     "Tags on fewer usable photos are cut from the vocabulary (HARRISON's rarest "
                     "tag is on 2).", lower_bound=1)
flags.DEFINE_integer("max_vocab", vocabulary.DEFAULT_MAX_SIZE,
                     "At most this many tags, the most frequent; the others are cut.",
                     lower_bound=1)
flags.DEFINE_string("records_dir", "work/records",
                    "Where the shards, vocab.txt, split.csv, tag_stats.csv and manifest.json go.")
flags.DEFINE_integer("test_size", 5000,
                     "Images in the test split (5000 as in the paper and its re-implementations). "
                     "With --sample the default is 20% of the sample, with --table or "
                     "--photos_dir a tenth of the usable photos (at most 5000).", lower_bound=1)
flags.DEFINE_integer("val_size", None, "Images in the validation split, carved from the train "
                     f"images; default {build_records.DEFAULT_VAL_SIZE}, or a tenth of the "
                     "images left after the test split when that is fewer (0: no val split).",
                     lower_bound=0)
flags.DEFINE_integer("seed", 42, "Seed of the train/val/test split.")
# Up to 2048 px: beyond it the records of HARRISON would not fit a Colab disk.
flags.DEFINE_integer("shorter_side", build_records.DEFAULT_IMAGE_SIZE,
                     "Shorter side of the stored images in pixels, aspect ratio kept. 342 = "
                     "299 / 0.875: evaluation's central 87.5% crop is then Inception v3's "
                     "299 px without upsampling. With --sample the default is 159 (for 139 px).",
                     lower_bound=32, upper_bound=2048)
flags.DEFINE_integer("workers", None, "Processes decoding and encoding images (default: all "
                     "cores).", lower_bound=1, upper_bound=256)
flags.DEFINE_integer("shard_size", 1024,
                     "Images per shard at most; the number of shards follows (about 30-50 MB "
                     "each at 299 px). With --sample the default is 128.", lower_bound=1)
flags.DEFINE_bool("overwrite", False,
                  "Replace an existing output made with different settings (all its files are "
                  "removed first). Without it such a run refuses to start.")
flags.DEFINE_bool("sample", False,
                  "Build the built-in sample dataset (drawn shapes and scenes in HARRISON's "
                  "format, deterministic, no download) under --sample_dir and preprocess it.")
flags.DEFINE_string("sample_dir", "work/sample", "Where --sample writes its HARRISON-format dataset.")
flags.DEFINE_integer("sample_images", sample.DEFAULT_IMAGES,
                     "Number of images of the --sample dataset.", lower_bound=10,
                     upper_bound=100_000)
cli.deprecated_alias("image_size", "shorter_side")
cli.deprecated_alias("output_dir", "records_dir")

# The sample's: --preset=cpu's 139 px input (159 = 139 / 0.875, data/image_files.stored_side).
SAMPLE_DEFAULTS = {"shorter_side": 159, "shard_size": 128}


def _setting(name):
    """The flag's value; with --sample, the sample's default unless the user gave the flag."""
    if FLAGS.sample and not FLAGS[name].present:
        if name == "test_size":
            return max(1, round(0.2 * FLAGS.sample_images))
        if name in SAMPLE_DEFAULTS:
            return SAMPLE_DEFAULTS[name]
    return FLAGS[name].value


def _catalogue():
    """The source the flags name, read (data/sources.py)."""
    given = [name for name in ("sample", "dataset_dir", "table", "photos_dir") if FLAGS[name].value]
    if len(given) > 1:
        raise cli.UserError(f"give one of --sample, --dataset_dir, --table and --photos_dir, not "
                            f"{' and '.join('--' + name for name in given)}")
    for name in ("images_dir", "allow_outside_paths"):
        if FLAGS[name].present and not FLAGS.table:
            raise cli.UserError(f"--{name} is for --table")
    if FLAGS.table:
        return sources.table(FLAGS.table, FLAGS.images_dir, FLAGS.table_encoding,
                             FLAGS.allow_outside_paths)
    if FLAGS.photos_dir:
        start = time.perf_counter()
        with process_pool.ordered_map(FLAGS.workers or build_records.default_workers()) as run:
            catalogue = sources.photos(FLAGS.photos_dir, run)
        print(f"keywords: read from {len(catalogue.rows)} photos in "
              f"{time.perf_counter() - start:.1f} s")
        return catalogue
    if FLAGS.sample:
        try:
            dataset_dir = sample.ensure_sample(FLAGS.sample_dir, FLAGS.sample_images)
        except OSError as error:  # a full disk, a --sample_dir that is a file...
            raise cli.UserError(f"cannot write the sample dataset to {FLAGS.sample_dir}: "
                                f"{error.strerror or error}") from None
        print(f"sample dataset: {dataset_dir} ({FLAGS.sample_images} images)")
        return sources.harrison_lists(dataset_dir)
    if FLAGS.dataset_dir:
        return sources.harrison_lists(FLAGS.dataset_dir)
    raise cli.UserError("--dataset_dir is required (or --sample for the built-in sample "
                        "dataset, --table or --photos_dir for your own photos)")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in ("dataset_dir", "sample_dir", "records_dir", "table", "images_dir", "photos_dir"):
        cli.check_utf8_path(flag, FLAGS[flag].value or "")
    try:
        catalogue = _catalogue()
        own = FLAGS.table or FLAGS.photos_dir
        build_records.build_records(
            catalogue, FLAGS.records_dir, image_size=_setting("shorter_side"),
            test_size=None if own and not FLAGS["test_size"].present else _setting("test_size"),
            val_size=FLAGS.val_size, seed=FLAGS.seed, shard_size=_setting("shard_size"),
            workers=FLAGS.workers, overwrite=FLAGS.overwrite,
            min_tag_photos=FLAGS.min_tag_photos, max_vocab=FLAGS.max_vocab)
    except OSError as error:  # e.g. a --records_dir that is a file (a full disk: OutputError)
        raise cli.UserError(str(error)) from None
    except KeyboardInterrupt:
        print("preprocess.py: interrupted; no manifest was written, re-run to finish",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli.run(main)
