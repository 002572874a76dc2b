"""Image preprocessing, training and evaluation side by side (slim's preprocessing/ idea).

Training: inception-style augmentation as slim's `inception_preprocessing`, in two halves.
`train_image` is all the CPU does per image: a random distorted-bounding-box crop, decoding only
that window, resized (uint8). `distort_batch` runs in the model's graph on whole batches (on the
accelerator when there is one): a random left-right flip and a mild colour distortion, from
per-image draws (`distortion_draws`). Both use stateless random ops seeded by (seed, position in
the stream), so a run with the same --seed sees the same crops and distortions in the same
order, whatever the parallelism, the batch or the number of accelerators.

Evaluation (`eval_image`: decode with transparency on white, central crop of 0.875, resize,
scale to [-1, 1]) is THE eval preprocessing: evaluate.py, predict.py and export.py all call it,
so a model is always scored on images prepared the same way.
"""
import tensorflow as tf

from data import image_files

# slim's inception_preprocessing.distorted_bounding_box_crop defaults.
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# The crop keeps at least a quarter of the photo (slim's ImageNet recipe goes down to 5%): a
# hashtag is often about the whole scene (#beach, #sunset), which a 5% crop cuts away.
MIN_CROP_AREA = 0.25
# No hue jitter by default: colours are hashtags (`yellow` is HARRISON's 5th most frequent tag).
HUE_JITTER = 0.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GIF_SIGNATURE = b"GIF8"  # GIF87a, GIF89a


def _to_unit_range(image):
    return tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]


def _to_model_range(image):
    return (tf.clip_by_value(image, 0.0, 1.0) - 0.5) * 2.0  # [0, 1] -> [-1, 1], as slim


def _on_white(rgba):
    """uint8 RGBA -> uint8 RGB composited on white, rounded as PIL's paste (data/image_files.to_rgb
    made the records so): round((rgb * alpha + 255 * (255 - alpha)) / 255)."""
    rgba = tf.cast(rgba, tf.int32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return tf.cast((rgb * alpha + 255 * (255 - alpha) + 127) // 255, tf.uint8)


def _gif_transparent_as_white(encoded):
    """GIF bytes whose first frame shows its transparent colour as opaque white.

    TensorFlow's GIF decoder returns transparent pixels black and no alpha, so the file itself is
    patched: the transparency flag of the first frame's graphic control extension is cleared and
    its transparent palette entry set to white (GIF transparency is all-or-nothing, so this is
    compositing on white). A file this parse does not follow is returned unchanged.
    """
    data = tf.io.decode_raw(encoded, tf.uint8)
    size = tf.size(data)
    # tf.equal, not ==: in nets/tagger.py's v1 graph, == compares tensors by identity.

    def byte(i):  # 0 past the end, which ends every loop below
        value = tf.cast(tf.gather(data, tf.clip_by_value(i, 0, size - 1)), tf.int32)
        return tf.where(i < size, value, 0)

    def table(flags):  # bytes of the colour table a flags byte announces (0: none)
        return tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), 0)

    def skip_extension(position, control):
        control = tf.where(tf.equal(byte(position + 1), 0xF9) & (control < 0), position, control)
        (end,) = tf.while_loop(lambda at: (at < size) & tf.not_equal(byte(at), 0),
                               lambda at: (at + byte(at) + 1,), (position + 2,))
        return end + 1, control

    # Header (6), logical screen (7), global colour table, then extensions up to the first image.
    image, control = tf.while_loop(
        lambda position, _: (position < size) & tf.equal(byte(position), 0x21), skip_extension,
        [13 + table(byte(10)), -1])
    local = table(byte(image + 9))
    palette = tf.where(local > 0, image + 10, 13)
    palette_bytes = tf.where(local > 0, local, table(byte(10)))
    index = byte(control + 6)
    patch = ((control >= 0) & tf.equal(byte(image), 0x2C) & tf.equal(byte(control + 3) % 2, 1)
             & (3 * index + 3 <= palette_bytes))

    def patched():
        flags = tf.gather(tf.constant([bytes([value]) for value in range(256)]),
                          byte(control + 3) - 1)
        return _replace(_replace(encoded, control + 3, flags), palette + 3 * index,
                        tf.constant(b"\xff\xff\xff"))

    return tf.cond(patch, patched, lambda: encoded)


def _replace(string, position, replacement):
    return tf.strings.join([tf.strings.substr(string, 0, position), replacement,
                            tf.strings.substr(string, position + tf.strings.length(replacement),
                                              tf.strings.length(string))])


def decode_on_white(encoded):
    """JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3]; a GIF's first frame. Transparency is composited
    on white, the rule of data/image_files.to_rgb, which made the (RGB JPEG) records."""
    def png():
        return _on_white(tf.io.decode_png(encoded, channels=4))  # tRNS and palettes give alpha too

    def gif():
        return tf.io.decode_image(_gif_transparent_as_white(encoded), channels=3,
                                  expand_animations=False)

    def other():  # JPEG and BMP (a BMP's 4th byte is often unused, not alpha)
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    image = tf.case([(tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE),
                      png),
                     (tf.equal(tf.strings.substr(encoded, 0, len(GIF_SIGNATURE)), GIF_SIGNATURE),
                      gif)], default=other)
    image.set_shape([None, None, 3])
    return image


JPEG_SIGNATURE = b"\xff\xd8\xff"
BMP_SIGNATURE = b"BM"


def _declared_size(encoded):
    """(height, width) int64 [2] as the image file's header declares them, read before it is
    decoded: JPEG (its frame header), PNG (IHDR), GIF (the logical screen), BMP (the info
    header); (0, 0) for another format."""
    head = tf.io.decode_raw(tf.strings.substr(encoded, 0, 26), tf.uint8)
    head = tf.cast(tf.pad(head, [[0, 26 - tf.size(head)]]), tf.int64)

    def number(at, length, big_endian=False):
        weights = [256 ** i for i in range(length)]
        return tf.reduce_sum(head[at:at + length] * (weights[::-1] if big_endian else weights))

    def signed(value):  # a BMP's height is negative for a top-down bitmap
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    def starts(signature):
        return tf.equal(tf.strings.substr(encoded, 0, len(signature)), signature)

    return tf.case([
        (starts(JPEG_SIGNATURE),
         lambda: tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2]),
        (starts(PNG_SIGNATURE), lambda: tf.stack([number(20, 4, True), number(16, 4, True)])),
        (starts(GIF_SIGNATURE), lambda: tf.stack([number(8, 2), number(6, 2)])),
        (starts(BMP_SIGNATURE), lambda: tf.stack([signed(number(22, 4)), signed(number(18, 4))]))],
        default=lambda: tf.zeros([2], tf.int64))


def _within_bounds(encoded):
    """`encoded`, once its header says it is a JPEG, PNG, GIF or BMP image of at most
    image_files.MAX_PIXELS pixels and MAX_ASPECT_RATIO: the graph never decodes a bomb nor
    upsamples a line of pixels into gigabytes (InvalidArgumentError naming the size)."""
    size = _declared_size(encoded)
    height, width = size[0], size[1]
    shown = tf.strings.format("{}x{} pixels", [width, height])
    checks = [
        tf.debugging.Assert(height * width > 0, [
            "not a JPEG, PNG, GIF or BMP image (the formats this model decodes)"]),
        tf.debugging.Assert(height * width <= image_files.MAX_PIXELS, [tf.strings.join([
            shown, f": more than the {image_files.MAX_PIXELS:,} an image may have"])]),
        tf.debugging.Assert(
            tf.maximum(height, width) <= image_files.MAX_ASPECT_RATIO * tf.minimum(height, width),
            [tf.strings.join([shown, f": an aspect ratio beyond {image_files.MAX_ASPECT_RATIO}:1, "
                                     "not a photo the model can take"])])]
    with tf.control_dependencies(checks):
        return tf.identity(encoded)


def eval_image(encoded, image_size, crop_size=None):
    """THE eval preprocessing: JPEG/PNG/GIF/BMP bytes -> float32 [S, S, 3] in [-1, 1].

    Refuse what the header says is another format, more than image_files.MAX_PIXELS pixels or
    beyond MAX_ASPECT_RATIO (before decoding: `_within_bounds`); decode (3 channels,
    transparency on white: decode_on_white); bring the shorter side to
    image_files.stored_side(image_size), aspect ratio kept, with an antialiased bicubic resize
    as preprocess.py stores the records (nothing to do for them); keep the central 87.5% (slim's
    inception_preprocessing eval crop), which is then image_size on the shorter side; resize
    to image_size x image_size; scale to [-1, 1]. A photo of any size thus reaches the model as
    its record would: predict.py, the SavedModel and evaluate.py agree.

    `crop_size` (default image_size): the size of a model whose crop this is. A test-time
    variant at a larger input size than the model was trained at (nets/variants.py) takes the
    crop of its training size, enlarged: the records stored for that size hold no more, and a
    photo must reach the model as its record does.
    """
    image = decode_on_white(_within_bounds(encoded))
    image = _to_unit_range(image)
    image = _shorter_side_to(image, image_files.stored_side(crop_size or image_size))
    image = tf.image.central_crop(image, central_fraction=image_files.EVAL_CENTRAL_FRACTION)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)


def _shorter_side_to(image, side):
    """`image` with its shorter side `side` and the other rounded as image_files.scaled_size
    does; PIL's bicubic reduction, in TensorFlow (antialiased: its kernel widens with the
    scale); unchanged when already there."""
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    target = tf.cast(tf.maximum(tf.round(shape * side / tf.reduce_min(shape)), 1.0), tf.int32)
    target = tf.where(tf.equal(shape, tf.reduce_min(shape)), side, target)
    resized = tf.image.resize(image, target, method="bicubic", antialias=True)
    return tf.cond(tf.reduce_all(tf.equal(target, tf.shape(image)[:2])), lambda: image,
                   lambda: tf.clip_by_value(resized, 0.0, 1.0))


# The training colour distortion's ranges (slim's inception_preprocessing, plus a mild contrast
# jitter), and the columns of distortion_draws: one uniform draw per random choice.
BRIGHTNESS_MAX_DELTA = 32.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.8, 1.2)
DRAW_FLIP, DRAW_BRIGHTNESS, DRAW_SATURATION, DRAW_HUE, DRAW_CONTRAST = range(5)
NUM_DRAWS = 5


def _image_seeds(seed):
    """The per-image stateless seed [2] split into one for the crop and one for the draws."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)


def train_image(encoded, image_size, seed, min_crop_area=MIN_CROP_AREA):
    """The per-image half of the training augmentation, all the CPU does per image: JPEG bytes
    -> the random crop (slim's distorted bounding box), decoded alone and resized bilinearly,
    uint8 [S, S, 3] (a quarter of float32's bytes to batch and copy to the accelerator).

    `seed` is the image's stateless seed (int32/int64 [2]; `distortion_draws` takes the same).
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=_image_seeds(seed)[0],
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=(min_crop_area, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    # Decoding only the crop window skips most of the IDCT work on large photos.
    crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    # Rounded to uint8: bilinear weights are convex, so the values stay within [0, 255].
    image = tf.cast(image + 0.5, tf.uint8)
    image.set_shape([image_size, image_size, 3])
    return image


def distortion_draws(seed):
    """The image's random draws of the flip and colour distortion: float32 [NUM_DRAWS] uniform
    in [0, 1), from its stateless seed (as `train_image`'s). Drawn per image on the CPU (a few
    numbers), applied by `distort_batch` in the model's graph: an image's distortion depends
    on its seed alone, not on the batch it lands in nor on how a batch is split across
    accelerators."""
    return tf.random.stateless_uniform([NUM_DRAWS], seed=_image_seeds(seed)[1])


def distort_batch(images, draws, hue_jitter=HUE_JITTER):
    """The batched half of the training augmentation, in the model's graph (on the accelerator
    when there is one): uint8 [B, S, S, 3] crops and their `distortion_draws` [B, NUM_DRAWS]
    -> float32 [B, S, S, 3] in [-1, 1].

    Per image, in slim's fast_mode order: a left-right flip (probability 1/2), a brightness
    shift in [-32/255, 32/255), a saturation factor in [0.5, 1.5) (HSV's, as
    tf.image.adjust_saturation), a hue shift in [-hue_jitter, hue_jitter) (only when asked for:
    two RGB<->HSV round trips), a contrast factor in [0.8, 1.2) (about each channel's mean);
    then clipped to [0, 1] and scaled to [-1, 1].
    """
    images = tf.convert_to_tensor(images)
    draws = tf.convert_to_tensor(draws, tf.float32)

    def per_image(column, low, high):  # [B, 1, 1, 1]: one value per image, broadcast
        return tf.reshape(low + (high - low) * draws[:, column], [-1, 1, 1, 1])

    # The flip as a gather of each image's columns, in order or reversed: on uint8, before the
    # float passes (a select between the batch and its reverse costs twice as much on a CPU).
    columns = tf.range(tf.shape(images)[2])
    columns = tf.where(draws[:, DRAW_FLIP:DRAW_FLIP + 1] < 0.5, columns[::-1], columns)
    image = _to_unit_range(tf.gather(images, columns, axis=2, batch_dims=1))
    image = image + per_image(DRAW_BRIGHTNESS, -BRIGHTNESS_MAX_DELTA, BRIGHTNESS_MAX_DELTA)
    image = _scale_saturation(image, per_image(DRAW_SATURATION, *SATURATION_RANGE))
    if hue_jitter:
        hsv = tf.image.rgb_to_hsv(image)
        hue = tf.math.floormod(hsv[..., :1] + per_image(DRAW_HUE, -hue_jitter, hue_jitter), 1.0)
        image = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
    mean = tf.reduce_mean(image, axis=[1, 2], keepdims=True)
    image = (image - mean) * per_image(DRAW_CONTRAST, *CONTRAST_RANGE) + mean
    return _to_model_range(image)


def _scale_saturation(image, factor):
    """tf.image.adjust_saturation with a factor per image, without its RGB<->HSV round trip.
    A pixel is value - k * chroma per channel (k set by the hue), so scaling its saturation
    (chroma / value, capped at 1) scales every channel's distance below the value, by
    min(factor, value / chroma); a pixel whose value is not positive has saturation 0 in HSV
    and comes out grey, as there."""
    red, green, blue = tf.split(image, 3, axis=-1)  # cheaper than reductions over 3 channels
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    ratio = tf.minimum(factor, tf.nn.relu(value) / tf.maximum(chroma, 1e-6))
    return value - (value - image) * ratio
