"""preprocess.py's conversion: the usable images -> the test, val and train TFRecord shards.

The worker processes (data/process_pool.py) do all the per-image work: decode and resize
(data/image_files.py), the tf.train.Example and its TFRecord framing (data/records.py); the
main process only appends each finished record to its shard, in order. It reads ahead for
them: as a batch of images is handed out, the OS is asked to start reading its files
(posix_fadvise), so a dataset that is not in the page cache is read while the workers decode
(a cold 100 kB file took 0.8 ms to read here, a sixth of its conversion time).
"""
import bisect
import contextlib
import os
import re

import numpy as np
from tqdm import tqdm

from data import harrison, image_files, process_pool, records

SPLITS = ("train", "val", "test")  # a split's code in split_codes is its index here
SHARD_PATTERN = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord$")
WRITE_BUFFER = 1 << 20


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_starts(total, shard_size):
    """First slot of each shard when `total` slots are cut into near-equal shards of at most
    shard_size."""
    count = max(1, -(-total // shard_size))
    return [index * total // count for index in range(count)]


def split_order(count, seed):
    """The processing order of the usable entries: test first, then val, then train."""
    return np.random.RandomState(seed).permutation(count)


def record_job(job):
    """Worker entry point: job = (file, image_size, quality, path, line, tag_ids) -> ("ok", the
    image's TFRecord bytes) or ("skip", reason, detail). Returns instead of raising so one bad
    file never stops a pool."""
    file, image_size, quality, path, line, tag_ids = job
    try:
        jpeg, height, width = image_files.convert_image(file, image_size, quality)
    except image_files.ImageError as error:
        return ("skip", error.reason, error.detail)
    return ("ok", records.frame(records.encode_example(jpeg, height, width, path, line, tag_ids)))


def _read_ahead(file):
    with contextlib.suppress(OSError, AttributeError):  # a missing file is its job's to report
        descriptor = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(descriptor)


def _jobs(dataset_dir, entries, order, settings):
    for index in order:
        entry = entries[index]
        file = os.path.join(dataset_dir, entry.path)
        _read_ahead(file)  # drawn by the pool a few batches before a worker converts it
        yield (file, settings["image_size"], settings["jpeg_quality"], entry.path, entry.line,
               entry.tag_ids)


def convert(dataset_dir, output_dir, entries, settings, workers, skipped):
    """Converts the images on `workers` processes and writes the shards of every split.
    Returns (split_codes, {split: {images, shards}}): split_codes[i] is the index in SPLITS of
    entries[i]'s split, -1 if it was not written; undecodable images go to `skipped`."""
    order = split_order(len(entries), settings["seed"])
    progress = tqdm(total=len(entries), unit="img", mininterval=0.5, smoothing=0,
                    desc="preprocess", dynamic_ncols=True)
    try:
        with process_pool.ordered_map(workers) as run_map:
            results = run_map(record_job, _jobs(dataset_dir, entries, order, settings))
            return _write_splits(output_dir, entries, zip(order, results), settings, skipped,
                                 progress)
    finally:
        progress.close()


class _ShardWriter:
    """Writes one split's shards in order, each under a temporary name renamed when complete."""

    def __init__(self, output_dir, split, total, shard_size):
        self.output_dir, self.split = output_dir, split
        self.starts = shard_starts(total, shard_size)
        count = len(self.starts)
        self.names = [shard_name(split, index, count) for index in range(count)]
        self.index, self.stream, self.images = -1, None, 0

    def _open_next(self):
        self.close_current()
        self.index += 1
        self.temporary = os.path.join(self.output_dir, f".{self.names[self.index]}.tmp")
        self.stream = open(self.temporary, "wb", buffering=WRITE_BUFFER)

    def close_current(self):
        if self.stream is not None:
            self.stream.close()
            os.replace(self.temporary, os.path.join(self.output_dir, self.names[self.index]))
            self.stream = None

    def write(self, slot, record):
        shard = bisect.bisect_right(self.starts, slot) - 1
        while self.index < shard:
            self._open_next()
        self.stream.write(record)
        self.images += 1

    def finish(self):
        while self.index < len(self.names) - 1:  # a shard whose images all failed is still written
            self._open_next()
        self.close_current()
        return {"images": self.images, "shards": self.names}

    def abort(self):
        """Removes the shard being written (after a full disk, an interrupt...)."""
        if self.stream is not None:
            with contextlib.suppress(Exception):  # a full disk may fail the flush of close
                self.stream.close()
            with contextlib.suppress(OSError):
                os.remove(self.temporary)
            self.stream = None


def _write_splits(output_dir, entries, converted, settings, skipped, progress):
    """Writes the test, val and train shards from `converted`, the (entry index, conversion
    result) pairs in split order. A failure removes the shard being written."""
    test_size, val_size, shard_size = (settings[key] for key in
                                       ("test_size", "val_size", "shard_size"))
    phases = [(split, size) for split, size in (("test", test_size), ("val", val_size)) if size]
    phases.append(("train", None))
    phase, writer, phase_start, written = 0, None, 0, 0
    split_codes = np.full(len(entries), -1, dtype=np.int8)
    summaries = {}  # split -> {images, shards}
    try:
        for position, (index, result) in enumerate(converted):
            split, size = phases[phase]
            if writer is None:
                total = size if size else len(entries) - position
                writer = _ShardWriter(output_dir, split, total, shard_size)
                phase_start = position
            if result[0] == "ok":
                writer.write(writer.images if size else position - phase_start, result[1])
                split_codes[index] = SPLITS.index(split)
                written += 1
                if size and writer.images == size:
                    summaries[split] = writer.finish()
                    writer, phase = None, phase + 1
            else:
                entry = entries[index]
                skipped.append({"line": entry.line, "path": entry.path, "reason": result[1],
                                "detail": result[2]})
            progress.update(1)
        if phases[phase][0] != "train" or writer is None:
            raise harrison.FormatError(
                f"only {written} of {len(entries)} images could be decoded: not enough "
                f"for --test_size={test_size} and --val_size={val_size} plus a training split")
        summaries["train"] = writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return split_codes, summaries
