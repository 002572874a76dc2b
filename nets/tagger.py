"""THE inference graph of a trained model: encoded image bytes -> top-k tags and their scores.

predict.py runs it in a session; export.py saves the same graph as a SavedModel. It is built from
a train_dir (train_config.json, vocab.txt, a checkpoint) with the pieces evaluate.py uses:
data.input.eval_image (decode, central crop, resize, [-1, 1]), nets.tagging.build_logits in
inference mode (batch norm on its moving averages) and nets.tagging.scores_from_logits. So a
photo gets the same scores from predict.py, from the SavedModel and from evaluate.py.

The vocabulary is a constant inside the graph: the outputs are tag strings, nothing else to ship.
"""
import os
import shutil
import tempfile

import numpy as np

from nets import compat

compat.import_slim()

import tensorflow.compat.v1 as tf  # noqa: E402

from data import input as data_input  # noqa: E402
from nets import tagging  # noqa: E402


SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"


class TaggerError(ValueError):
    """A model or export directory that cannot be used (a one-line message for the user)."""


def _first_line(error):
    """The line of a TensorFlow error that says what is wrong (not "Graph execution error:")."""
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Graph execution error",
                                                               "[[", "Detected at node"))]
    return (useful or lines or [type(error).__name__])[0]


def decode_images(encoded, image_size):
    """string [N] of encoded JPEG/PNG/GIF/BMP -> float32 [N, S, S, 3], each image through
    eval_image (the images may have any size, hence one decode per element)."""
    return tf.map_fn(lambda image: data_input.eval_image(image, image_size), encoded,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
                     name="decode")


def build_tagger(encoded, config, vocab, top_k):
    """The tagging graph on `encoded` (string [N]) for the model described by `config`
    (train_config.json) and `vocab`.

    Returns dict: tags (string [N, k], best first), scores (float32 [N, k]), ids (int32 [N, k]),
    where k = top_k, or every tag when top_k is 0 (or larger than the vocabulary).
    """
    num_tags = int(config["num_tags"])
    if len(vocab) != num_tags:
        raise TaggerError(f"vocab.txt has {len(vocab)} tags but train_config.json says "
                          f"num_tags={num_tags}")
    image_size = int(config["image_size"])
    count = tf.shape(encoded)[0]
    images = decode_images(encoded, image_size)
    # An empty batch crashes the CPU convolutions (oneDNN); run one blank image instead and
    # keep none of its outputs, so an empty request gets empty answers.
    images = tf.cond(count > 0, lambda: images,
                     lambda: tf.zeros([1, image_size, image_size, 3], tf.float32))
    logits, _ = tagging.build_logits(images, num_tags, config["backbone"],
                                     float(config["depth_multiplier"]), is_training=False)
    scores = tagging.scores_from_logits(logits, config["loss"])[:count]
    k = num_tags if top_k <= 0 else min(top_k, num_tags)
    top = tf.math.top_k(scores, k=k, sorted=True)
    vocabulary = tf.constant(vocab, dtype=tf.string, name="vocabulary")
    return {"tags": tf.gather(vocabulary, top.indices, name="tags"),
            "scores": tf.identity(top.values, name="scores"),
            "ids": tf.identity(top.indices, name="ids")}


def load_model(checkpoint_path):
    """(checkpoint prefix, train_dir, config, vocab) of a train_dir or one checkpoint prefix."""
    checkpoint, train_dir = tagging.resolve_checkpoint(checkpoint_path)
    config, vocab = tagging.load_train_dir(train_dir)
    return checkpoint, train_dir, config, vocab


def _restore(saver, session, checkpoint, config):
    try:
        saver.restore(session, checkpoint)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, ValueError) as error:
        raise TaggerError(f"cannot restore {checkpoint} into the {config['backbone']} model of "
                          f"train_config.json: {_first_line(error)}") from None


class Tagger:
    """A restored model in a session: `tag()` encoded images, `tag_each()` with per-image errors."""

    def __init__(self, checkpoint_path, top_k=5):
        self.checkpoint, self.train_dir, self.config, self.vocab = load_model(checkpoint_path)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
            self.outputs = build_tagger(self.images, self.config, self.vocab, top_k)
            saver = tf.train.Saver()
            self.session = tf.Session(graph=self.graph)
            _restore(saver, self.session, self.checkpoint, self.config)
        self.graph.finalize()

    def tag(self, encoded):
        """(tags [N][k] str, scores float32 [N, k]) for a list of encoded images; raises
        tf.errors.InvalidArgumentError when any of them does not decode."""
        result = self.session.run(self.outputs, {self.images: np.array(encoded, dtype=object)})
        tags = [[tag.decode("utf-8") for tag in row] for row in result["tags"]]
        return tags, result["scores"]

    def tag_each(self, encoded):
        """One (tags [k], scores [k]) or an error message (str) per encoded image, in order.

        Runs the whole list as one batch; only when that fails is each image run alone, so one
        undecodable image costs its own result, not the batch's.
        """
        if not encoded:
            return []
        try:
            tags, scores = self.tag(encoded)
            return list(zip(tags, scores))
        except tf.errors.InvalidArgumentError:
            pass
        results = []
        for image in encoded:
            try:
                tags, scores = self.tag([image])
                results.append((tags[0], scores[0]))
            except tf.errors.InvalidArgumentError as error:
                results.append(f"cannot decode: {_first_line(error)}")
        return results

    def close(self):
        self.session.close()


def export_saved_model(checkpoint_path, export_dir, top_k=10, overwrite=False):
    """Writes the tagging graph with the checkpoint's weights as a SavedModel in `export_dir`.

    Signature "serving_default": input `images` (string [None], encoded JPEG/PNG/GIF/BMP bytes),
    outputs `tags` (string [None, k]) and `scores` (float32 [None, k]), best first. The
    vocabulary is a constant in the graph; vocab.txt and train_config.json are copied as assets.
    Written into a temporary directory beside `export_dir` and moved into place whole.
    Returns dict: checkpoint, export_dir, top_k, num_tags.
    """
    checkpoint, train_dir, config, vocab = load_model(checkpoint_path)
    if top_k < 1:
        raise TaggerError(f"--top_k must be >= 1, got {top_k}")
    if os.path.exists(export_dir) and not (os.path.isdir(export_dir)
                                           and not os.listdir(export_dir)):
        if not overwrite:
            raise TaggerError(f"{export_dir} already exists; pass --overwrite to replace it or "
                              "choose another --export_dir")
        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise TaggerError(f"{export_dir} exists and is not a SavedModel; refusing to replace "
                              "it, choose another --export_dir")
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        built = os.path.join(staging, "saved_model")
        graph = tf.Graph()
        with graph.as_default():
            images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
            outputs = build_tagger(images, config, vocab, top_k)
            for name in (tagging.VOCAB_NAME, tagging.CONFIG_NAME):
                tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS,
                                     tf.constant(os.path.join(train_dir, name), name=f"asset_{name}"))
            saver = tf.train.Saver()
            with tf.Session(graph=graph) as session:
                _restore(saver, session, checkpoint, config)
                signature = tf.saved_model.predict_signature_def(
                    inputs={INPUT_NAME: images},
                    outputs={"tags": outputs["tags"], "scores": outputs["scores"]})
                builder = tf.saved_model.Builder(built)
                builder.add_meta_graph_and_variables(
                    session, [tf.saved_model.tag_constants.SERVING],
                    signature_def_map={SIGNATURE_NAME: signature},
                    assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                    strip_default_attrs=True)
                builder.save()
        if os.path.exists(export_dir):  # an old export (or an empty folder): swap, then delete
            os.replace(export_dir, os.path.join(staging, "previous"))
        os.replace(built, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"checkpoint": checkpoint, "export_dir": export_dir,
            "top_k": min(top_k, len(vocab)), "num_tags": len(vocab)}
