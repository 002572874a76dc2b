"""data/preprocessing.py and data/pipeline.py: the eval preprocessing against hand-computed pixels
(transparency composited on white as the records are), the eval dataset's order and completeness,
the training pipeline's shapes, labels and determinism, and the batched in-graph augmentation
(distort_batch: a flip flips, TensorFlow's colour ops' results within the documented ranges,
the same output for the same draws however a batch is split; the eval path untouched)."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import image_files, pipeline, preprocessing
from train_records import VOCAB, write_records


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    return str(directory), write_records(str(directory), {"train": 24, "test": 7})


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def multi_hot(tags):
    row = np.zeros(len(VOCAB), np.float32)
    row[tags] = 1.0
    return row


def test_eval_image_is_central_crop_scaled_to_minus_one_one():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    # 0.875 of 16 px is 14 px, one pixel off each side; resizing 14 -> 14 keeps the pixels.
    result = preprocessing.eval_image(tf.constant(png_bytes(array)), 14).numpy()
    expected = (array[1:15, 1:15].astype(np.float32) / 255.0 - 0.5) * 2.0
    assert result.shape == (14, 14, 3) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_eval_image_resizes_any_shape_and_grey_jpeg_to_three_channels():
    grey = np.full((30, 50), 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="JPEG")
    result = preprocessing.eval_image(tf.constant(buffer.getvalue()), 21).numpy()
    assert result.shape == (21, 21, 3)
    np.testing.assert_allclose(result, 1.0, atol=0.02)


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def palette_image(size=(6, 5)):
    """Index 1 (blue) everywhere but a red and a black pixel: index 1 is made transparent."""
    image = Image.new("P", size, 1)
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 0, 0] + [9] * 759)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 2)
    return image


def with_local_colour_table(gif):
    """The same one-frame GIF (header, screen, global table, a control extension, the image) with
    its colour table moved from the screen into the image descriptor."""
    flags = gif[10]
    table_end = 13 + 3 * 2 ** (flags % 8 + 1)
    image = table_end + 8
    assert gif[table_end:table_end + 2] == b"\x21\xf9" and gif[image] == 0x2C
    return (gif[:10] + bytes([flags & 0x7F]) + gif[11:13] + gif[table_end:image + 9]
            + bytes([0x80 | flags % 8]) + gif[13:table_end] + gif[image + 10:])


def transparency_cases():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(12, 16, 4), dtype=np.uint8)
    rgba[::3, ::3, 1::2] = 0  # some fully transparent pixels (alpha of RGBA and of LA)
    gif = encoded(palette_image(), "GIF", transparency=1)
    frames = [palette_image(), palette_image()]
    return {
        "rgba png": encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
        "grey+alpha png": encoded(Image.fromarray(rgba[..., :2], "LA"), "PNG"),
        "palette png with tRNS": encoded(palette_image(), "PNG", transparency=1),
        "rgb png with tRNS": encoded(Image.fromarray(rgba[..., :3] // 128 * 255), "PNG",
                                     transparency=(255, 0, 255)),
        "gif": gif,
        "gif, local colour table": with_local_colour_table(gif),
        "animated gif after other extensions": encoded(
            frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=1, loop=0,
            comment=b"extensions before the control one"),
        "gif without transparency": encoded(palette_image(), "GIF"),
    }


def decode_in_v1_graph(data):
    """decode_on_white as nets/tagger.py runs it (a tf.compat.v1 graph and session)."""
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf.compat.v1.placeholder(tf.string, [])
        image = preprocessing.decode_on_white(placeholder)
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(image, {placeholder: data})


@pytest.mark.parametrize("case", sorted(transparency_cases()))
def test_transparency_is_composited_on_white_exactly_as_the_records_are(case):
    data = transparency_cases()[case]
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(image_files.to_rgb(image))
    if "without" not in case:
        assert (expected == 255).all(axis=-1).any(), "the case must have transparent pixels"
    np.testing.assert_array_equal(preprocessing.decode_on_white(tf.constant(data)).numpy(),
                                  expected)
    np.testing.assert_array_equal(decode_in_v1_graph(data), expected)


def test_a_fully_transparent_image_is_white_to_the_model():
    clear = encoded(Image.new("RGBA", (16, 16), (0, 0, 255, 0)), "PNG")
    np.testing.assert_array_equal(preprocessing.eval_image(tf.constant(clear), 14).numpy(), 1.0)


def test_a_cut_gif_fails_or_decodes_as_tensorflow_alone_does():
    """The GIF parse never loops or reads past the end: every prefix of a file decodes (or fails)
    as tf.io.decode_image does."""
    gif = transparency_cases()["animated gif after other extensions"]
    for end in range(len(gif)):
        try:
            tf.io.decode_image(gif[:end], channels=3, expand_animations=False)
            plain = True
        except tf.errors.InvalidArgumentError:
            plain = False
        try:
            preprocessing.decode_on_white(tf.constant(gif[:end]))
            patched = True
        except tf.errors.InvalidArgumentError:
            patched = False
        assert patched == plain, end


def test_eval_dataset_yields_every_record_once_in_file_order(records_dir):
    directory, written = records_dir
    batches = list(pipeline.eval_dataset(directory, "test", 32, 3, len(VOCAB)))
    assert [len(b["path"]) for b in batches] == [3, 3, 1]  # last partial batch kept
    paths = [p.decode() for b in batches for p in b["path"].numpy()]
    assert paths == [path for path, _ in written["test"]]
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    np.testing.assert_array_equal(labels, [multi_hot(tags) for _, tags in written["test"]])
    images = np.concatenate([b["images"].numpy() for b in batches])
    assert images.shape == (7, 32, 32, 3) and images.min() >= -1 and images.max() <= 1


def train_batches(directory, seed, count=6, size=40, batch=5):
    dataset = pipeline.train_dataset(directory, size, batch, len(VOCAB), seed=seed,
                                     shuffle_buffer=8)
    return [{name: value.numpy() for name, value in b.items()} for b in dataset.take(count)]


def test_train_dataset_batches_are_crops_draws_and_labels_the_same_for_a_seed(records_dir):
    directory, written = records_dir
    known = {tuple(multi_hot(tags)) for _, tags in written["train"]}
    batches = train_batches(directory, seed=3)  # 30 images > 24: it repeats
    for batch in batches:
        assert batch["images"].shape == (5, 40, 40, 3) and batch["images"].dtype == np.uint8
        assert batch["draws"].shape == (5, preprocessing.NUM_DRAWS)
        assert batch["draws"].min() >= 0.0 and batch["draws"].max() < 1.0
        assert batch["labels"].shape == (5, len(VOCAB))
        assert all(tuple(row) in known for row in batch["labels"])
    for a, b in zip(batches, train_batches(directory, seed=3)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    other = train_batches(directory, seed=4)
    assert not all(np.array_equal(a["images"], b["images"]) for a, b in zip(batches, other))
    assert not all(np.array_equal(a["draws"], b["draws"]) for a, b in zip(batches, other))


def neutral_draws(count, **columns):
    """Draws that change nothing (no flip, zero shifts, factors 1), but the given columns."""
    draws = np.full((count, preprocessing.NUM_DRAWS), 0.5, np.float32)
    draws[:, preprocessing.DRAW_FLIP] = 0.75
    for name, value in columns.items():
        draws[:, getattr(preprocessing, "DRAW_" + name.upper())] = value
    return draws


def random_crops(count=3, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def model_range(crops):
    return (crops.astype(np.float32) / 255.0 - 0.5) * 2.0


def test_distort_batch_with_neutral_draws_only_scales_and_a_flip_flips():
    crops = random_crops()
    unchanged = preprocessing.distort_batch(crops, neutral_draws(3)).numpy()
    np.testing.assert_allclose(unchanged, model_range(crops), atol=1e-5)
    flips = neutral_draws(3)
    flips[1, preprocessing.DRAW_FLIP] = 0.25  # < 0.5: the second image only
    flipped = preprocessing.distort_batch(crops, flips).numpy()
    expected = model_range(crops)
    expected[1] = expected[1, :, ::-1]
    np.testing.assert_allclose(flipped, expected, atol=1e-5)


def test_distort_batch_colours_match_tensorflows_per_image_ops_within_their_ranges():
    crops = random_crops(count=4, seed=1)
    draws = np.random.default_rng(2).uniform(size=(4, preprocessing.NUM_DRAWS))
    draws[:, preprocessing.DRAW_FLIP] = 0.75
    for hue_jitter in (0.0, 0.05):
        result = preprocessing.distort_batch(crops, draws, hue_jitter).numpy()
        assert result.dtype == np.float32 and result.min() >= -1.0 and result.max() <= 1.0
        for index, (image, d) in enumerate(zip(crops, draws)):
            # The documented ranges: each draw u in [0, 1) maps to low + (high - low) * u.
            x = tf.image.convert_image_dtype(image, tf.float32)
            x = tf.image.adjust_brightness(x, (2 * d[preprocessing.DRAW_BRIGHTNESS] - 1)
                                           * preprocessing.BRIGHTNESS_MAX_DELTA)
            x = tf.image.adjust_saturation(x, 0.5 + d[preprocessing.DRAW_SATURATION])
            if hue_jitter:
                x = tf.image.adjust_hue(x, (2 * d[preprocessing.DRAW_HUE] - 1) * hue_jitter)
            x = tf.image.adjust_contrast(x, 0.8 + 0.4 * d[preprocessing.DRAW_CONTRAST])
            expected = (tf.clip_by_value(x, 0.0, 1.0).numpy() - 0.5) * 2.0
            np.testing.assert_allclose(result[index], expected, atol=2e-5)


def test_the_distortion_is_the_same_for_the_same_seed_in_a_v1_graph_on_any_batch_split():
    crops = random_crops(count=4, seed=3)
    draws = np.random.default_rng(4).uniform(size=(4, preprocessing.NUM_DRAWS)).astype(
        np.float32)
    graph = tf.Graph()
    with graph.as_default():  # as nets/train_step.py builds it: a tf.compat.v1 graph
        whole = preprocessing.distort_batch(tf.constant(crops), tf.constant(draws))
        halves = [preprocessing.distort_batch(tf.constant(crops[i:i + 2]),
                                              tf.constant(draws[i:i + 2])) for i in (0, 2)]
        with tf.compat.v1.Session(graph=graph) as session:
            first, again, (a, b) = session.run(whole), session.run(whole), session.run(halves)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.concatenate([a, b]), first, atol=1e-6)  # per image, as split
    eager = preprocessing.distort_batch(crops, draws).numpy()
    np.testing.assert_allclose(eager, first, atol=1e-6)


def test_the_eval_path_is_untouched_by_the_training_augmentation(records_dir):
    # eval_dataset gives eval_image of each record's bytes: no crop draw, flip nor colour.
    directory, _ = records_dir
    from data import records
    batch = next(iter(pipeline.eval_dataset(directory, "test", 32, 7, len(VOCAB))))
    serialized = next(iter(tf.data.TFRecordDataset(pipeline.shard_files(directory, "test"))))
    encoded = records.decode_example(serialized.numpy())["jpeg"]
    np.testing.assert_array_equal(batch["images"][0].numpy(),
                                  preprocessing.eval_image(tf.constant(encoded), 32).numpy())


def test_missing_split_is_a_one_line_input_error(tmp_path):
    with pytest.raises(pipeline.InputError, match="no 'train' TFRecords"):
        pipeline.shard_files(str(tmp_path), "train")
