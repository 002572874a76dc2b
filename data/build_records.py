"""preprocess.py's engine: a HARRISON directory -> sharded TFRecords, vocab, split, stats, manifest.

How a run goes:
1. Read the source (data/sources.py: HARRISON's lists, a table, or a folder of keyworded
   photos) and plan: entries that cannot be used without opening the image (path outside the
   root, duplicate, missing or empty file, no tag in the vocabulary chosen by the rules of
   data/vocabulary.py) are skipped with a reason; tags outside the vocabulary are dropped and
   counted.
2. Shuffle the usable entries with numpy's RandomState(seed) (stable across numpy versions).
   The test split is the first `test_size` images of that order that decode, val the next
   `val_size`, train the rest; so an undecodable image never leaves a split short.
3. Decode, resize and re-encode on all cores (data/image_files.py, a process pool); results come
   back in order, so the records are byte-identical whatever the number of workers.
4. Each shard is written under a temporary name and renamed when complete; vocab.txt,
   tag_stats.csv and split.csv follow, and manifest.json comes last: its presence means the
   output is complete. A run killed at any moment leaves no manifest; re-running with the same
   settings rewrites everything identically and removes the temporaries killed runs left.
   Different settings on an existing output refuse unless `overwrite`, which first removes
   every file of the old output. A full disk stops the run with a one-line error, its
   temporaries removed and no manifest written.
5. One run at a time writes an output folder: a second refuses while the first holds the
   folder's lock (LOCK_FILE), which the OS releases when the first ends or is killed.
"""
import bisect
import collections
import contextlib
import ctypes
import errno
import json
import multiprocessing
import os
import re
import signal
import sys

import numpy as np
from absl import logging
from tqdm import tqdm

import cli
from data import atomic, harrison, image_files, sources, vocabulary

FORMAT_VERSION = 1
# Images carved from the train split for validation (checkpoint choice, the linear probe): 5% of
# HARRISON's train images; precision@1's standard error on them is about 0.9 points (p ~ 0.3).
DEFAULT_VAL_SIZE = 2500
SPLITS = ("train", "val", "test")
SHARD_PATTERN = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord$")
# The shards' temporaries, and data/atomic.py's (`.tmp-<name>-<pid>-...`) for the other files.
TEMP_PATTERN = re.compile(r"^(\.tmp-.*|\.?(train|val|test|vocab|manifest|tag_stats|split|"
                          r"\.preprocess-run).*\.tmp(-\d+)?)$")
RUN_FILE = ".preprocess-run.json"  # the settings of the run in progress (or last run)
LOCK_FILE = ".preprocess.lock"  # held while a run writes the folder (atomic.exclusive)
OUTPUT_FILES = (harrison.MANIFEST_FILE, harrison.VOCAB_FILE, harrison.TAG_STATS_FILE, "split.csv",
                RUN_FILE)
RESIZE_POLICY = "shorter side resized to image_size, aspect ratio kept, no crop (bicubic)"


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def split_order(count, seed):
    """The processing order of the usable entries: test first, then val, then train."""
    return np.random.RandomState(seed).permutation(count)


def shard_starts(total, shard_size):
    """First slot of each shard when `total` slots are cut into near-equal shards of at most
    shard_size."""
    count = max(1, -(-total // shard_size))
    return [index * total // count for index in range(count)]


def _settings(catalogue, image_size, test_size, val_size, seed, shard_size, quality, rules):
    """What identifies a run's output. The vocabulary rules appear only when not at their
    defaults, so that an output of HARRISON made before they existed is still the same run."""
    settings = {"dataset_dir": os.path.abspath(catalogue.root), "image_size": image_size,
                "test_size": test_size, "val_size": val_size, "seed": seed,
                "shard_size": shard_size, "jpeg_quality": quality,
                "format_version": FORMAT_VERSION, **catalogue.settings}
    defaults = {"min_tag_photos": vocabulary.DEFAULT_MIN_PHOTOS,
                "max_vocab": vocabulary.DEFAULT_MAX_SIZE}
    settings.update({name: value for name, value in rules.items() if value != defaults[name]})
    return settings


def _previous_settings(output_dir):
    """Settings of what is already in output_dir: a dict, "unknown" for foreign files, or None."""
    for name in (harrison.MANIFEST_FILE, RUN_FILE):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    return json.load(handle).get("settings", "unknown")
            except ValueError:
                return "unknown"
    names = os.listdir(output_dir)
    if any(SHARD_PATTERN.match(name) or name in OUTPUT_FILES for name in names):
        return "unknown"
    return None


def _describe_difference(previous, settings):
    if not isinstance(previous, dict):
        return "files of an unknown earlier run"
    changed = [f"{key} {previous.get(key)!r} -> {value!r}" for key, value in settings.items()
               if previous.get(key) != value]
    return "different settings: " + ", ".join(changed)


def _remove_files(output_dir, keep_shards=()):
    for name in os.listdir(output_dir):
        is_ours = SHARD_PATTERN.match(name) or TEMP_PATTERN.match(name) or name in OUTPUT_FILES
        if is_ours and name not in keep_shards:
            os.remove(os.path.join(output_dir, name))


def prepare_output_dir(output_dir, settings, overwrite):
    """Refuses an output of other settings unless overwrite; leaves no manifest until the end.
    Only under output_dir's lock (`_writing`): it removes the temporaries it finds."""
    previous = _previous_settings(output_dir)
    if previous is not None and previous != settings:
        if not overwrite:
            raise harrison.FormatError(
                f"{output_dir} already holds preprocessed data with "
                f"{_describe_difference(previous, settings)}; pass --overwrite to replace it "
                "or choose another --records_dir")
        _remove_files(output_dir)
    else:
        # Same settings (a re-run, or the resumption of a killed run): the shards will be
        # rewritten byte for byte; only the manifest must go so that nobody reads a mix meanwhile.
        for name in os.listdir(output_dir):
            if TEMP_PATTERN.match(name) or name == harrison.MANIFEST_FILE:
                os.remove(os.path.join(output_dir, name))
    atomic.write_text(os.path.join(output_dir, RUN_FILE),
                      json.dumps({"settings": settings}, indent=1) + "\n")


def _die_with_parent():
    # Pool workers of a SIGKILLed run would otherwise linger, blocked on their task pipe (Linux).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent alone


@contextlib.contextmanager
def ordered_map(workers):
    """Yields a `map(function, iterable)` run lazily on `workers` processes, results in order."""
    if workers <= 1:
        yield map
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start instantly and share the parent's imports; the pool is created before
    # TensorFlow is imported (see build_records), so no TF state is forked.
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = context.Pool(workers, initializer=_die_with_parent)
    try:
        yield lambda fn, jobs: pool.imap(fn, jobs, chunksize=4)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


class _ShardWriter:
    """Writes one split's shards in order, each under a temporary name renamed when complete."""

    def __init__(self, tf, output_dir, split, total, shard_size):
        self.tf, self.output_dir, self.split = tf, output_dir, split
        self.starts = shard_starts(total, shard_size)
        count = len(self.starts)
        self.names = [shard_name(split, index, count) for index in range(count)]
        self.index, self.writer, self.images = -1, None, 0

    def _open_next(self):
        self.close_current()
        self.index += 1
        self.temporary = os.path.join(self.output_dir, f".{self.names[self.index]}.tmp")
        self.writer = self.tf.io.TFRecordWriter(self.temporary)

    def close_current(self):
        if self.writer is not None:
            self.writer.close()
            os.replace(self.temporary, os.path.join(self.output_dir, self.names[self.index]))
            self.writer = None

    def write(self, slot, record):
        shard = bisect.bisect_right(self.starts, slot) - 1
        while self.index < shard:
            self._open_next()
        self.writer.write(record)
        self.images += 1

    def finish(self):
        while self.index < len(self.names) - 1:  # a shard whose images all failed is still written
            self._open_next()
        self.close_current()
        return {"images": self.images, "shards": self.names}

    def abort(self):
        """Removes the shard being written (after a full disk, an interrupt...)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk may fail the flush of close
                self.writer.close()
            with contextlib.suppress(OSError):
                os.remove(self.temporary)
            self.writer = None


class OutputError(cli.UserError):
    """An output folder that cannot be written now: in use by another run, or its disk full."""


def _is_disk_full(error):
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # TensorFlow's writers report a full disk as ResourceExhaustedError, not OSError. Until
    # build_records imports TensorFlow (late, see there), no TensorFlow error can occur.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.ResourceExhaustedError)


@contextlib.contextmanager
def _writing(output_dir):
    """Holds output_dir's lock (a second run refuses while this one writes; a killed run's lock
    goes with its process) and reports a full disk in one line."""
    def busy(holder):
        return OutputError(f"{output_dir} is in use by another preprocess.py ({holder}); wait "
                           "for it to finish or choose another --records_dir")

    try:
        os.makedirs(output_dir, exist_ok=True)
        with atomic.exclusive(os.path.join(output_dir, LOCK_FILE), busy) as locked:
            if not locked:
                logging.warning("%s cannot be locked on this file system: make sure only one "
                                "preprocess.py writes to it", output_dir)
            yield
    except Exception as error:  # any type: TensorFlow's errors are not OSErrors
        if not _is_disk_full(error):
            raise
        raise OutputError(f"no space left on the disk of {output_dir}: free some space and run "
                          "the same command again (the output is incomplete: it has no "
                          f"{harrison.MANIFEST_FILE})") from None


def default_val_size(images):
    """The val split carved from `images` (those left after the test split): DEFAULT_VAL_SIZE,
    or a tenth of them on a dataset too small for it, so training keeps nine in ten."""
    return min(DEFAULT_VAL_SIZE, images // 10)


def build_records(catalogue, output_dir, image_size=342, test_size=5000, val_size=None, seed=42,
                  shard_size=1024, workers=None, overwrite=False, quality=image_files.JPEG_QUALITY,
                  log=print, min_tag_photos=vocabulary.DEFAULT_MIN_PHOTOS,
                  max_vocab=vocabulary.DEFAULT_MAX_SIZE):
    """Runs the whole conversion of a data/sources.py Catalogue; returns the manifest dict.
    `test_size` None: a tenth of the usable images, at most 5,000; `val_size` None: the
    default (default_val_size). Raises harrison.FormatError, or OutputError when output_dir is
    in use or its disk full."""
    for name, value, low in (("image_size", image_size, 16), ("test_size", test_size or 0, 0),
                             ("val_size", val_size or 0, 0), ("shard_size", shard_size, 1),
                             ("min_tag_photos", min_tag_photos, 1), ("max_vocab", max_vocab, 1)):
        if value < low:
            raise harrison.FormatError(f"--{name} must be at least {low}, got {value}")
    workers = workers or default_workers()
    entries, skipped, dropped, vocab = sources.plan(catalogue, min_tag_photos, max_vocab)
    if entries and not vocab.tags:
        raise harrison.FormatError(f"no tag is on {min_tag_photos} or more photos: the "
                                   "vocabulary is empty (see --min_tag_photos)")
    if test_size is None:
        test_size = min(5000, len(entries) // 10)
    if val_size is None:
        val_size = default_val_size(max(len(entries) - test_size, 0))
        if val_size < DEFAULT_VAL_SIZE:
            log(f"val split: {val_size} images, a tenth of the {len(entries) - test_size} left "
                f"after the test split (too few for the default {DEFAULT_VAL_SIZE:,})")
    settings = _settings(catalogue, image_size, test_size, val_size, seed, shard_size, quality,
                         {"min_tag_photos": min_tag_photos, "max_vocab": max_vocab})
    if test_size + val_size >= len(entries):
        raise harrison.FormatError(
            f"only {len(entries)} usable images of {len(catalogue.rows)}: --test_size={test_size} "
            f"and --val_size={val_size} leave none for training")
    with _writing(output_dir):
        prepare_output_dir(output_dir, settings, overwrite)
        log(f"converting {len(entries)} images to {image_size} px on {workers} worker(s) "
            f"-> {output_dir}")
        split_of, summaries = _convert(catalogue.root, output_dir, entries, settings, workers,
                                       skipped)
        return _write_metadata(output_dir, settings, vocab, entries, split_of, summaries,
                               skipped, dropped, len(catalogue.rows), log)


def _convert(dataset_dir, output_dir, entries, settings, workers, skipped):
    """Converts the images on `workers` processes and writes the shards of every split.
    Returns ({entry index: split}, {split: {images, shards}}); undecodable images go to
    `skipped`."""
    order = split_order(len(entries), settings["seed"])
    jobs = ((os.path.join(dataset_dir, entries[index].path), settings["image_size"],
             settings["jpeg_quality"]) for index in order)
    with ordered_map(workers) as run_map:
        results = run_map(image_files.convert_for_record, jobs)
        # Started before the TensorFlow import so that its rate and ETA count the import.
        progress = tqdm(total=len(entries), unit="img", mininterval=0.5, smoothing=0,
                        desc="preprocess", dynamic_ncols=True)
        # TensorFlow (and data.records, which needs it) is imported only now, after the fork.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            return _write_splits(tf, output_dir, entries, zip(order, results), settings,
                                 skipped, progress)
        finally:
            progress.close()


def _write_splits(tf, output_dir, entries, converted, settings, skipped, progress):
    """Writes the test, val and train shards from `converted`, the (entry index, conversion
    result) pairs in split order. A failure removes the shard being written."""
    from data import records

    test_size, val_size, shard_size = (settings[key] for key in
                                       ("test_size", "val_size", "shard_size"))
    phases = [(split, size) for split, size in (("test", test_size), ("val", val_size)) if size]
    phases.append(("train", None))
    phase, writer, phase_start = 0, None, 0
    split_of, summaries = {}, {}  # entry index -> split; split -> {images, shards}
    try:
        for position, (index, result) in enumerate(converted):
            split, size = phases[phase]
            if writer is None:
                total = size if size else len(entries) - position
                writer = _ShardWriter(tf, output_dir, split, total, shard_size)
                phase_start = position
            entry = entries[index]
            if result[0] == "ok":
                jpeg, height, width = result[1:]
                slot = writer.images if size else position - phase_start
                writer.write(slot, records.encode_example(jpeg, height, width, entry.path,
                                                          entry.line, entry.tag_ids))
                split_of[index] = split
                if size and writer.images == size:
                    summaries[split] = writer.finish()
                    writer, phase = None, phase + 1
            else:
                skipped.append({"line": entry.line, "path": entry.path, "reason": result[1],
                                "detail": result[2]})
            progress.update(1)
        if phases[phase][0] != "train" or writer is None:
            raise harrison.FormatError(
                f"only {len(split_of)} of {len(entries)} images could be decoded: not enough "
                f"for --test_size={test_size} and --val_size={val_size} plus a training split")
        summaries["train"] = writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return split_of, summaries


def _write_metadata(output_dir, settings, chosen, entries, split_of, summaries, skipped, dropped,
                    num_lines, log):
    import pandas as pd

    splits, vocab = [split for split in SPLITS if split in summaries], chosen.tags
    harrison.write_vocab(os.path.join(output_dir, harrison.VOCAB_FILE), vocab)

    kept = sorted(split_of, key=lambda index: entries[index].line)
    table = pd.DataFrame({"path": [entries[index].path for index in kept],
                          "line": [entries[index].line for index in kept],
                          "split": [split_of[index] for index in kept]})
    _write_csv(table, os.path.join(output_dir, "split.csv"))

    stats = pd.DataFrame({"tag": vocab, "id": np.arange(len(vocab))})
    for split in splits:
        ids = [tag for index in kept if split_of[index] == split for tag in entries[index].tag_ids]
        stats[split] = np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(vocab))
    _write_csv(chosen.with_cut_tags(stats), os.path.join(output_dir, harrison.TAG_STATS_FILE))

    # A shard name of an earlier run with other image decode results (same settings) goes too.
    final_shards = {name for split in splits for name in summaries[split]["shards"]}
    _remove_files(output_dir, keep_shards=final_shards | set(OUTPUT_FILES))

    skipped.sort(key=lambda item: item["line"])
    by_reason = collections.Counter(item["reason"] for item in skipped)
    manifest = dict(
        dataset_dir=settings["dataset_dir"], image_size=settings["image_size"],
        seed=settings["seed"], test_size=settings["test_size"], val_size=settings["val_size"],
        shard_size=settings["shard_size"], jpeg_quality=settings["jpeg_quality"],
        resize=RESIZE_POLICY, vocab_size=len(vocab), entries=num_lines,
        images=sum(summaries[split]["images"] for split in splits),
        splits={split: summaries[split] for split in splits},
        skipped=skipped, skipped_by_reason=dict(sorted(by_reason.items())),
        dropped_tags={"occurrences": sum(dropped.values()), "distinct": len(dropped),
                      "most_common": [[tag, count] for tag, count in sorted(
                          dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]},
        settings=settings)
    atomic.write_text(os.path.join(output_dir, harrison.MANIFEST_FILE),
                      json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")

    counts = ", ".join(f"{split} {summaries[split]['images']}" for split in splits)
    log(f"wrote {counts} images in {len(final_shards)} shards, vocab.txt ({len(vocab)} tags), "
        f"split.csv, tag_stats.csv, manifest.json to {output_dir}")
    if skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(by_reason.items()))
        log(f"skipped {len(skipped)} of {num_lines} entries ({reasons}); "
            "each with its line and reason in manifest.json")
    if dropped:
        log(f"dropped {sum(dropped.values())} tag occurrences not in the vocabulary "
            f"({len(dropped)} distinct tags, listed in manifest.json)")
    return manifest


def _write_csv(frame, path):
    with atomic.atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False, lineterminator="\n")


if __name__ == "__main__":
    sys.exit("run preprocess.py")
