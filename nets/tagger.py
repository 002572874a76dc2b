"""THE inference graph of a trained model: encoded image bytes -> top-k tags and their scores.

predict.py runs it in a session; export.py saves the same graph as a SavedModel. It is built from
a train_dir (nets/train_dir.py) with the pieces evaluate.py uses: data.preprocessing.eval_image
(decode, central crop, resize, [-1, 1]) and nets.model.build_scores (inference mode: batch norm
on its moving averages). So the same image bytes get the same scores from predict.py, from the
SavedModel and from evaluate.py.

The vocabulary is a constant inside the graph: the outputs are tag strings, nothing else to ship.

A model to tag with (`open_tagger`) is a train_dir or one checkpoint in it (`Tagger`: the graph
built here, the checkpoint restored), or what export.py wrote (`ExportedTagger`: that graph
loaded from the SavedModel), as a folder or as one .tar.gz archive (`write_archive`) to hand
to someone else. Both run the same graph, so they give the same tags and scores.
"""
import atexit
import os
import shutil
import sys
import tarfile
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

import cli
from data import atomic, preprocessing
from nets import model, train_dir, warm_start

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("tags", "scores")
SAVED_MODEL_FILE = "saved_model.pb"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class TaggerError(cli.UserError):
    """A model or export directory that cannot be used."""


def decode_images(encoded, image_size):
    """string [N] of encoded JPEG/PNG/GIF/BMP -> float32 [N, S, S, 3], each image through
    eval_image (the images may have any size, hence one decode per element)."""
    return tf.map_fn(lambda image: preprocessing.eval_image(image, image_size), encoded,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
                     name="decode")


def build_tagger(encoded, config, vocab, top_k):
    """The tagging graph on `encoded` (string [N]) for the model described by `config`
    (train_config.json) and `vocab`.

    Returns dict: tags (string [N, k], best first) and scores (float32 [N, k]), where
    k = top_k, or every tag when top_k is 0 (or larger than the vocabulary).
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
    scores = model.build_scores(images, config)[:count]
    k = num_tags if top_k <= 0 else min(top_k, num_tags)
    top = tf.math.top_k(scores, k=k, sorted=True)
    vocabulary = tf.constant(vocab, dtype=tf.string, name="vocabulary")
    return {"tags": tf.gather(vocabulary, top.indices, name="tags"),
            "scores": tf.identity(top.values, name="scores")}


def load_model(model_path):
    """(checkpoint prefix, train_dir, config, vocab) of a train_dir or one checkpoint in it."""
    checkpoint, directory = train_dir.resolve(model_path)
    config, vocab = train_dir.load(directory)
    return checkpoint, directory, config, vocab


class _SessionTagger:
    """A tagging graph in a session: `tag()` encoded images, `tag_each()` with per-image errors.
    Subclasses set graph, session, images (the input), outputs (tags, scores), config, vocab
    and `keep` (how many of the outputs' columns to return; None: all)."""

    keep = None

    def tag(self, encoded):
        """(tags [N][k] str, scores float32 [N, k]) for a list of encoded images; raises
        tf.errors.InvalidArgumentError when any of them does not decode."""
        result = self.session.run(self.outputs, {self.images: np.array(encoded, dtype=object)})
        tags = [[tag.decode("utf-8") for tag in row[:self.keep]] for row in result["tags"]]
        return tags, result["scores"][:, :self.keep]

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
                results.append(f"cannot decode: {cli.first_line(error)}")
        return results

    def close(self):
        self.session.close()


class Tagger(_SessionTagger):
    """A train_dir's model (or one checkpoint's): the tagging graph, the checkpoint restored."""

    def __init__(self, model_path, top_k=5):
        self.checkpoint, self.train_dir, self.config, self.vocab = load_model(model_path)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
            self.outputs = build_tagger(self.images, self.config, self.vocab, top_k)
            self.session = tf.Session(graph=self.graph)
            train_dir.restore_model(self.session, self.checkpoint, self.config)
        self.graph.finalize()


def is_archive_name(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def saved_model_folder(path):
    """The folder of the SavedModel in `path` (a SavedModel folder, or a folder holding one
    such folder, as an archive of write_archive extracts), or None."""
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    inside = [os.path.join(path, name) for name in sorted(os.listdir(path))
              if os.path.isfile(os.path.join(path, name, SAVED_MODEL_FILE))]
    return inside[0] if len(inside) == 1 else None


class ExportedTagger(_SessionTagger):
    """What export.py wrote, a SavedModel folder or its .tar.gz archive (extracted into a
    temporary folder, removed on close): its graph and signature, run in a session. It returns
    its own top k (export.py --top_k) per image, of which `top_k` (0: all of them)."""

    def __init__(self, path, top_k=5):
        self.extracted = None
        folder = path
        if os.path.isfile(path):
            self.extracted = tempfile.mkdtemp(prefix="exported-model-")
            atexit.register(shutil.rmtree, self.extracted, True)
            warm_start.safe_extract(path, self.extracted)
            folder = saved_model_folder(self.extracted)
            if folder is None:
                raise TaggerError(f"{path} holds no SavedModel ({SAVED_MODEL_FILE}): is it an "
                                  "archive of export.py --archive?")
        assets = os.path.join(folder, "assets")
        for name in (train_dir.CONFIG_FILE, train_dir.VOCAB_FILE):
            if not os.path.isfile(os.path.join(assets, name)):
                raise TaggerError(f"{path} is not a model of export.py: assets/{name} is missing")
        try:
            self.config, self.vocab = train_dir.load(assets)
        except train_dir.TrainDirError as error:
            raise TaggerError(f"{path}: {error}") from None
        self.graph = tf.Graph()
        self.session = tf.Session(graph=self.graph)
        with self.graph.as_default():
            signature = self._load_signature(path, folder)
            self.images = self.graph.get_tensor_by_name(signature.inputs[INPUT_NAME].name)
            self.outputs = {name: self.graph.get_tensor_by_name(signature.outputs[name].name)
                            for name in OUTPUT_NAMES}
        self.graph.finalize()
        self.exported_k = self.outputs["tags"].shape.as_list()[1]
        if top_k > self.exported_k:
            raise TaggerError(f"{path} returns {self.exported_k} tags per image (export.py "
                              f"--top_k): ask for at most {self.exported_k}, or export it again "
                              f"with --top_k={top_k}")
        self.keep = top_k or None

    def _load_signature(self, path, folder):
        # The TF1 loader is the one that gives a graph and a session, as the Tagger runs; its
        # deprecation warning (two lines on stderr) says nothing to predict.py's users.
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            meta_graph = tf.saved_model.loader.load(
                self.session, [tf.saved_model.tag_constants.SERVING], folder)
        except (tf.errors.OpError, RuntimeError, OSError, ValueError) as error:
            raise TaggerError(f"cannot load the SavedModel in {path}: "
                              f"{cli.first_line(error)}") from None
        finally:
            logger.setLevel(level)
        signature = meta_graph.signature_def.get(SIGNATURE_NAME)
        if (signature is None or INPUT_NAME not in signature.inputs
                or set(OUTPUT_NAMES) - set(signature.outputs)):
            raise TaggerError(f"{path} has no '{SIGNATURE_NAME}' signature taking "
                              f"'{INPUT_NAME}' and returning tags and scores: not a model of "
                              "export.py")
        return signature

    def close(self):
        super().close()
        if self.extracted:
            shutil.rmtree(self.extracted, ignore_errors=True)


def open_tagger(model_path, top_k=5):
    """The tagger of `model_path`: a train_dir or one checkpoint in it (`Tagger`), or an export
    of export.py, its SavedModel folder or its .tar.gz archive (`ExportedTagger`). Says on
    stderr which model it uses."""
    exported = (os.path.isfile(model_path) and is_archive_name(model_path)) or (
        os.path.isdir(model_path) and os.path.isfile(os.path.join(model_path,
                                                                  SAVED_MODEL_FILE)))
    if not exported:
        return Tagger(model_path, top_k)  # train_dir.resolve says which checkpoint
    tagger = ExportedTagger(model_path, top_k)
    print(f"{model_path}: using the exported model ({tagger.exported_k} tags per image, "
          f"{len(tagger.vocab)} in its vocabulary)", file=sys.stderr)
    return tagger


def _check_replaceable(export_dir, archive, overwrite):
    """TaggerError unless the outputs may be written: new, or old ones of export.py replaced
    with `overwrite`; never a folder or file of something else."""
    if export_dir and os.path.exists(export_dir) and not (os.path.isdir(export_dir)
                                                          and not os.listdir(export_dir)):
        if not overwrite:
            raise TaggerError(f"{export_dir} already exists; pass --overwrite to replace it or "
                              "choose another --export_dir")
        if not os.path.isfile(os.path.join(export_dir, SAVED_MODEL_FILE)):
            raise TaggerError(f"{export_dir} exists and is not a SavedModel; refusing to replace "
                              "it, choose another --export_dir")
    if archive and os.path.exists(archive):
        if not overwrite:
            raise TaggerError(f"{archive} already exists; pass --overwrite to replace it or "
                              "choose another --archive")
        if not (os.path.isfile(archive) and tarfile.is_tarfile(archive)):
            raise TaggerError(f"{archive} exists and is not an archive; refusing to replace it, "
                              "choose another --archive")


def _write_saved_model(folder, checkpoint, directory, config, vocab, top_k):
    """The tagging graph with the checkpoint's weights as a SavedModel in the empty `folder`."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
        outputs = build_tagger(images, config, vocab, top_k)
        for name in (train_dir.VOCAB_FILE, train_dir.CONFIG_FILE):
            tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, tf.constant(
                os.path.join(directory, name), name=f"asset_{name}"))
        with tf.Session(graph=graph) as session:
            train_dir.restore_model(session, checkpoint, config)
            signature = tf.saved_model.predict_signature_def(
                inputs={INPUT_NAME: images},
                outputs={name: outputs[name] for name in OUTPUT_NAMES})
            builder = tf.saved_model.Builder(folder)
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={SIGNATURE_NAME: signature},
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                strip_default_attrs=True)
            builder.save()


def archive_folder_name(archive):
    """The folder an archive holds its SavedModel in: its name without .tar.gz or .tgz."""
    name = os.path.basename(archive)
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)] or "model"
    return name


def write_archive(saved_model, archive):
    """Packs the SavedModel folder `saved_model` into the .tar.gz `archive` (atomically), in one
    folder named after the archive: `tar -xzf hashtags.tar.gz` gives hashtags/saved_model.pb,
    variables/ and assets/ (vocab.txt, train_config.json)."""
    def anonymous(member):  # no user or group names of the machine that exported it
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        return member

    with atomic.atomic_path(archive) as temporary:
        with tarfile.open(temporary, "w:gz") as tar:
            tar.add(saved_model, arcname=archive_folder_name(archive), filter=anonymous)


def export_saved_model(model_path, export_dir=None, top_k=10, overwrite=False, archive=None):
    """Writes the tagging graph with the checkpoint's weights as a SavedModel in `export_dir`,
    and/or as the one-file `archive` (.tar.gz, `write_archive`).

    Signature "serving_default": input `images` (string [None], encoded JPEG/PNG/GIF/BMP bytes),
    outputs `tags` (string [None, k]) and `scores` (float32 [None, k]), best first. The
    vocabulary is a constant in the graph; vocab.txt and train_config.json are copied as assets.
    Written into a temporary folder that then replaces `export_dir` whole (data/atomic.py); the
    archive is written whole or not at all.
    Returns dict: checkpoint, export_dir, archive, top_k, num_tags.
    """
    if not (export_dir or archive):
        raise TaggerError("nothing to write: give an export folder or an archive")
    checkpoint, directory, config, vocab = load_model(model_path)
    _check_replaceable(export_dir, archive, overwrite)
    parts = (checkpoint, directory, config, vocab, top_k)
    if export_dir:
        with atomic.atomic_dir(export_dir) as staging:
            _write_saved_model(staging, *parts)
            if archive:
                write_archive(staging, archive)
    else:
        with tempfile.TemporaryDirectory(prefix="export-") as staging:
            _write_saved_model(staging, *parts)
            write_archive(staging, archive)
    return {"checkpoint": checkpoint, "export_dir": export_dir, "archive": archive,
            "top_k": min(top_k, len(vocab)), "num_tags": len(vocab)}
