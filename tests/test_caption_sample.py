"""The second generated dataset (data/caption_sample.py): a CSV of captioned posts whose vocabulary
differs from the built-in sample's, for adapting a sample-trained model to new hashtags."""
import filecmp
import os
import random

import numpy as np
from PIL import Image

from data import caption_sample, sample, sources


def test_deterministic_from_its_seed(tmp_path):
    first = caption_sample.ensure_caption_sample(str(tmp_path / "a"), num_images=30)
    second = caption_sample.ensure_caption_sample(str(tmp_path / "b"), num_images=30)
    names = ["posts.csv"] + [f"photos/post_{index:04d}.jpg" for index in range(30)]
    assert filecmp.cmpfiles(os.path.dirname(first), os.path.dirname(second), names,
                            shallow=False)[0] == names
    other = caption_sample.ensure_caption_sample(str(tmp_path / "c"), num_images=30, seed=2)
    assert open(other, "rb").read() != open(first, "rb").read()


def test_its_hashtags_overlap_the_samples_and_are_learnable_from_pixels(tmp_path):
    table = caption_sample.ensure_caption_sample(str(tmp_path))
    entries, skipped, _, vocab = sources.plan(sources.table(table))
    assert 280 <= len(entries) < 300 and {item["reason"] for item in skipped} == {"no_hashtag"}
    sample_tags = set(sample.SCENES) | set(sample.COLOURS) | set(sample.SOCIAL) | {
        tag for table in (sample.SCENE_OBJECTS, sample.SCENE_CONTEXT)
        for tags in table.values() for tag in tags} | {"blackandwhite"}
    shared, new = set(vocab.tags) & sample_tags, set(vocab.tags) - sample_tags
    assert {"beach", "snow", "forest", "sun", "tree", "boat", "love"} <= shared
    assert {"desert", "field", "underwater", "cactus", "kite", "balloon", "fish"} <= new
    # A 7-nearest-neighbour vote on 4x4 colour thumbnails beats always guessing the most
    # popular tags: the tags follow the pixels.
    root = os.path.dirname(table)
    features = np.array([np.asarray(Image.open(os.path.join(root, entry.path)).convert("RGB")
                                    .resize((4, 4), Image.BOX), dtype=np.float32).ravel()
                         for entry in entries]) / 255.0
    labels = np.zeros((len(entries), len(vocab.tags)), dtype=np.float32)
    for row, entry in enumerate(entries):
        labels[row, entry.tag_ids] = 1
    order = np.random.RandomState(0).permutation(len(entries))
    test, train = order[:60], order[60:]
    distances = ((features[test, None] - features[None, train]) ** 2).sum(-1)
    votes = labels[train][np.argsort(distances, axis=1)[:, :7]].mean(axis=1)
    popular = np.tile(labels[train].mean(axis=0), (len(test), 1))

    def precision_at_1(scores):
        return labels[test, np.argmax(scores, axis=1)].mean()

    assert precision_at_1(votes) > precision_at_1(popular) + 0.25


def test_captions_are_written_as_people_write_them():
    rng = random.Random(0)
    posts = [caption_sample.draw_post(rng) for _ in range(200)]
    captions = [caption for _, _, caption in posts]
    assert any("C#" in caption for caption in captions)  # not a hashtag
    assert any(any(c.isupper() for c in caption.split("#", 1)[-1]) for caption in captions)
    assert any("#" not in caption for caption in captions)
