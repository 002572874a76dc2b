"""preprocess.py's engine: photos and tags -> sharded TFRecords, vocab, split, stats, manifest.

How a run goes:
1. Read the source (data/sources.py: HARRISON's lists, a table, or a folder of keyworded
   photos) and plan: entries that cannot be used without opening the image (path outside the
   root, duplicate, missing or empty file, no tag in the vocabulary chosen by the rules of
   data/vocabulary.py) are skipped with a reason; tags outside the vocabulary are dropped and
   counted.
2. Shuffle the usable entries with numpy's RandomState(seed) (stable across numpy versions).
   The test split is the first `test_size` images of that order that decode, val the next
   `val_size`, train the rest; so an undecodable image never leaves a split short.
3. Convert on all cores (data/shards.py): worker processes decode, resize and re-encode each
   image and make its record; records come back in order, so the output is byte-identical
   whatever the number of workers. Memory does not grow with the number of images beyond the
   entries list itself (plus one byte per image for its split).
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
import collections
import contextlib
import csv
import errno
import json
import os
import re

import numpy as np
from absl import logging

import cli
from data import atomic, harrison, image_files, shards, sources, vocabulary

FORMAT_VERSION = 1
DEFAULT_IMAGE_SIZE = 342  # preprocess.py's --shorter_side (299 / 0.875, see its flag)
# Images carved from the train split for validation (checkpoint choice, the linear probe): 5% of
# HARRISON's train images; precision@1's standard error on them is about 0.9 points (p ~ 0.3).
DEFAULT_VAL_SIZE = 2500
SPLITS = shards.SPLITS
SHARD_PATTERN = shards.SHARD_PATTERN
# The shards' temporaries, and data/atomic.py's (`.tmp-<name>-<pid>-...`) for the other files.
TEMP_PATTERN = re.compile(r"^(\.tmp-.*|\.?(train|val|test|vocab|manifest|tag_stats|split|"
                          r"\.preprocess-run).*\.tmp(-\d+)?)$")
RUN_FILE = ".preprocess-run.json"  # the settings of the run in progress (or last run)
LOCK_FILE = ".preprocess.lock"  # held while a run writes the folder (atomic.exclusive)
OUTPUT_FILES = (harrison.MANIFEST_FILE, harrison.VOCAB_FILE, harrison.TAG_STATS_FILE, "split.csv",
                RUN_FILE)
RESIZE_POLICY = "shorter side resized to image_size, aspect ratio kept, no crop (bicubic)"


def default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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


class OutputError(cli.UserError):
    """An output folder that cannot be written now: in use by another run, or its disk full."""


def _is_disk_full(error):
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


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
    except OSError as error:
        if not _is_disk_full(error):
            raise
        raise OutputError(f"no space left on the disk of {output_dir}: free some space and run "
                          "the same command again (the output is incomplete: it has no "
                          f"{harrison.MANIFEST_FILE})") from None


def default_val_size(images):
    """The val split carved from `images` (those left after the test split): DEFAULT_VAL_SIZE,
    or a tenth of them on a dataset too small for it, so training keeps nine in ten."""
    return min(DEFAULT_VAL_SIZE, images // 10)


def build_records(catalogue, output_dir, image_size=DEFAULT_IMAGE_SIZE, test_size=5000,
                  val_size=None, seed=42, shard_size=1024, workers=None, overwrite=False,
                  quality=image_files.JPEG_QUALITY, log=print,
                  min_tag_photos=vocabulary.DEFAULT_MIN_PHOTOS,
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
        split_codes, summaries = shards.convert(catalogue.root, output_dir, entries, settings,
                                                workers, skipped)
        return _write_metadata(output_dir, settings, vocab, entries, split_codes, summaries,
                               skipped, dropped, len(catalogue.rows), log)


def _write_tables(output_dir, chosen, entries, split_codes, splits):
    """split.csv (path, line and split of every written image, in line order as `entries` are)
    and tag_stats.csv (per-tag image counts of each split, and the tags the rules cut:
    vocabulary.Vocabulary.with_cut_tags), streamed: nothing is held per image."""
    import pandas as pd

    vocab = chosen.tags
    counts = [[0] * len(vocab) for _ in SPLITS]
    with atomic.atomic_path(os.path.join(output_dir, "split.csv")) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            table = csv.writer(stream, lineterminator="\n")  # as pandas' to_csv writes it
            table.writerow(("path", "line", "split"))
            for entry, code in zip(entries, split_codes.tolist()):
                if code >= 0:
                    table.writerow((entry.path, entry.line, SPLITS[code]))
                    for tag in entry.tag_ids:
                        counts[code][tag] += 1
    stats = pd.DataFrame({"tag": vocab, "id": np.arange(len(vocab))})
    for split in splits:
        stats[split] = np.asarray(counts[SPLITS.index(split)], dtype=np.int64)
    with atomic.atomic_path(os.path.join(output_dir, harrison.TAG_STATS_FILE)) as temporary:
        chosen.with_cut_tags(stats).to_csv(temporary, index=False, lineterminator="\n")


def _write_metadata(output_dir, settings, chosen, entries, split_codes, summaries, skipped,
                    dropped, num_lines, log):
    splits, vocab = [split for split in SPLITS if split in summaries], chosen.tags
    harrison.write_vocab(os.path.join(output_dir, harrison.VOCAB_FILE), vocab)
    _write_tables(output_dir, chosen, entries, split_codes, splits)

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


if __name__ == "__main__":
    raise SystemExit("run preprocess.py")
