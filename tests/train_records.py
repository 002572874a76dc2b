"""Tiny TFRecord datasets in preprocess.py's layout for the train/input/nets tests (issue 3).

Each image is a flat colour with noise; its tags follow from the colour (one tag per dominant
channel, plus "bright"/"dark"), so a model can learn them from pixels in a few steps.
"""
import io
import json
import os

import numpy as np
from PIL import Image

from data import harrison, records

VOCAB = ["red", "green", "blue", "bright", "dark"]


def colour_tags(rgb):
    tags = [i for i in range(3) if rgb[i] >= 128]
    tags.append(3 if np.mean(rgb) >= 128 else 4)
    return tags


def jpeg_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_records(records_dir, images_per_split=None, size=(40, 56), shards=2, seed=0):
    """Writes {split}-NNNNN-of-NNNNN.tfrecord, vocab.txt and manifest.json; returns the
    per-split list of (path, tag ids) in file order."""
    images_per_split = images_per_split or {"train": 48, "test": 10}
    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    written, manifest_splits, line = {}, {}, 0
    for split, count in images_per_split.items():
        examples = []
        for index in range(count):
            rgb = rng.integers(0, 256, size=3)
            noise = rng.integers(-20, 21, size=(size[0], size[1], 3))
            array = np.clip(rgb + noise, 0, 255).astype(np.uint8)
            path = f"instagram_dataset/{split}/image_{index}.jpg"
            tags = colour_tags(rgb)
            examples.append((path, tags, records.encode_example(
                jpeg_bytes(array), size[0], size[1], path, line, tags)))
            line += 1
        names = [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
        import tensorflow as tf
        for i, name in enumerate(names):
            with tf.io.TFRecordWriter(os.path.join(records_dir, name)) as writer:
                for path, tags, serialized in examples[i::shards]:
                    writer.write(serialized)
        # file order: shard by shard
        written[split] = [(p, t) for i in range(shards) for p, t, _ in examples[i::shards]]
        manifest_splits[split] = {"images": count, "shards": names}
    harrison.write_vocab(os.path.join(records_dir, harrison.VOCAB_FILE), VOCAB)
    with open(os.path.join(records_dir, harrison.MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump({"dataset_dir": "synthetic", "image_size": max(size), "seed": seed,
                   "vocab_size": len(VOCAB), "splits": manifest_splits, "skipped": []}, f)
    return written
