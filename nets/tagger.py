"""THE inference graph of a trained model: encoded image bytes -> top-k tags and their scores.

predict.py runs it in a session; export.py saves the same graph as a SavedModel. It is built from
a train_config (nets/train_dir.py) with the pieces evaluate.py uses: data.preprocessing.eval_image
(decode, central crop, resize, [-1, 1]) and nets.model.build_scores (inference mode: batch norm
on its moving averages). So the same image bytes get the same scores from predict.py, from the
SavedModel and from evaluate.py.

The vocabulary is a constant inside the graph: the outputs are tag strings, nothing else to ship.

A model to tag with (`open_tagger`, `model_source`) is a train_dir or one checkpoint in it, or
what export.py wrote, as a folder or as one .tar.gz archive (`write_archive`) to hand to someone
else. Either way the graph is built here, from the config, and only the weights are restored: an
export's own graph never runs (nets/exported.py reads it as data), so a model archive from a
stranger cannot run code. Both give the same tags and scores.
"""
import collections
import contextlib
import json
import os
import sys
import tarfile
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

import cli
from data import atomic, preprocessing
from nets import exported, model, restoring, train_dir, variants

SIGNATURE_NAME = exported.SIGNATURE_NAME
INPUT_NAME = exported.INPUT_NAME
OUTPUT_NAMES = exported.OUTPUT_NAMES
SAVED_MODEL_FILE = exported.SAVED_MODEL_FILE
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class TaggerError(cli.UserError):
    """A model or export directory that cannot be used."""


def decode_images(encoded, image_size, crop_size=None):
    """string [N] of encoded JPEG/PNG/GIF/BMP -> float32 [N, S, S, 3], each image through
    eval_image (the images may have any size, hence one decode per element). One image at a
    time: a request's decoding then takes one image's memory, which eval_image bounds (at most
    image_files.MAX_PIXELS pixels), whatever the images it holds. `crop_size`: eval_image's."""
    return tf.map_fn(lambda image: preprocessing.eval_image(image, image_size, crop_size),
                     encoded,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
                     parallel_iterations=1, name="decode")


def build_tagger(encoded, config, vocab, top_k):
    """The tagging graph on `encoded` (string [N]) for the model described by `config`
    (train_config.json, checked by nets/train_dir.load) and `vocab`.

    Returns dict: tags (string [N, k], best first) and scores (float32 [N, k]), where
    k = top_k, or every tag when top_k is 0 (or larger than the vocabulary).
    """
    num_tags = int(config["num_tags"])
    image_size = int(config["image_size"])
    count = tf.shape(encoded)[0]
    images = decode_images(encoded, image_size, config.get("crop_size"))
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


# A model's parts: `weights(variables)` -> the checkpoint prefix to restore `variables` from;
# assets_dir holds its vocab.txt and train_config.json; name says which weights (a checkpoint
# prefix, or the export's path); exported_k: the tags per image an export returns (else None).
Source = collections.namedtuple("Source", "weights assets_dir config vocab name exported_k")


def is_export(model_path):
    """Whether `model_path` names what export.py wrote (a .tar.gz archive or a SavedModel
    folder) rather than a train_dir or a checkpoint."""
    return (os.path.isfile(model_path) and is_archive_name(model_path)) or (
        os.path.isdir(model_path) and exported.is_export_folder(model_path))


@contextlib.contextmanager
def model_source(model_path):
    """The Source of `model_path`: a train_dir or one checkpoint in it (train_dir.resolve says
    which, on stderr), or an export of export.py (its temporary files removed when the block
    ends)."""
    if is_export(model_path):
        with exported.open_export(model_path) as export:
            yield Source(export.weights, export.assets_dir, export.config, export.vocab,
                         model_path, export.top_k)
        return
    checkpoint, directory = train_dir.resolve(model_path)
    config, vocab = train_dir.load(directory)
    yield Source(lambda variables: checkpoint, directory, config, vocab, checkpoint, None)


def checkpoint_of(source):
    """The checkpoint prefix of the weights of `source`, to read outside a tagging graph (a warm
    start): an export's variables are capped at the size of the graph its config describes,
    built here only to be measured."""
    if source.exported_k is None:  # a train_dir's checkpoint, read where it is
        return source.weights(None)
    size = int(source.config["image_size"])
    with tf.Graph().as_default():
        model.build_scores(tf.placeholder(tf.float32, [None, size, size, 3]), source.config)
        return source.weights(tf.global_variables())


def _restore(session, source, config, averaged=False):
    """Restores the weights of `source` (restoring.restore_model: checked to fit first; with
    `averaged`, their moving averages); a failure names the model the user gave, not an
    export's temporary files."""
    checkpoint = source.weights(tf.global_variables())
    try:
        restoring.restore_model(session, checkpoint, config, averaged=averaged)
    except train_dir.TrainDirError as error:
        raise TaggerError(str(error).replace(checkpoint, source.name)) from None


def variant_of(source, override=None):
    """(the test-time variant a Source is scored with, why): a train_dir's checkpoint in the
    variant best.json chose for it on val (else the default one), an export in the one it was
    exported with (its variables hold that variant's weights, raw or averaged: `reads_averages`);
    then what `override` (a function of the variant, e.g. variants.from_flags) changes."""
    config = source.config
    if source.exported_k is None:
        variant, why = variants.chosen(source.assets_dir, source.name, config)
    else:
        recorded = config.get("variant")
        weights = recorded.get("weights") if isinstance(recorded, dict) else None
        variant = variants.Variant(weights if weights in variants.WEIGHTS else "raw",
                                   int(config["image_size"]), bool(config.get("mirror")))
        why = "the variant it was exported with"
    if override:
        wanted = override(variant)
        if wanted != variant:
            if source.exported_k is not None and wanted.weights != variant.weights:
                raise TaggerError(f"{source.name} is an export: it holds the {variant.weights} "
                                  f"weights it was exported with (--weights=auto or "
                                  f"{variant.weights})")
            variant, why = wanted, "as the flags ask"
    return variant, why


def reads_averages(source, variant):
    """Whether `variant` restores the moving averages of the Source's checkpoint (an export's
    variables already hold the weights of the variant it was exported with)."""
    return variant.weights == "averaged" and source.exported_k is None


class Tagger:
    """The tagging graph of a Source in a session: `tag()` encoded images, `tag_each()` with
    per-image errors. It returns `top_k` tags per image (0: all), or for an export the tags it
    was exported with, of which `keep` (None: all)."""

    def __init__(self, source, top_k=5, keep=None, override=None):
        self.config, self.vocab, self.name = source.config, source.vocab, source.name
        self.exported_k, self.keep = source.exported_k, keep
        exported = source.exported_k is not None
        # A train_dir's model: its checkpoint and folder (an export keeps neither).
        self.checkpoint = None if exported else source.name
        self.train_dir = None if exported else source.assets_dir
        # The test-time variant: the graph's input size (image_size) and mirroring, which weights.
        self.variant, self.variant_why = variant_of(source, override)
        # Photos are reduced as the records of the model's training size are stored.
        self.crop_size = variants.crop_size(self.config)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
            self.outputs = build_tagger(self.images, variants.scoring_config(
                self.config, self.variant), self.vocab, top_k)
            self.session = tf.Session(graph=self.graph)
            _restore(self.session, source, self.config, reads_averages(source, self.variant))
        self.graph.finalize()

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


def is_archive_name(path):
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def open_tagger(model_path, top_k=5, override=None):
    """The Tagger of `model_path`: a train_dir or one checkpoint in it, or an export of
    export.py, its SavedModel folder or its .tar.gz archive (which returns at most the tags it
    was exported with: `exported_k`), in its test-time variant (`variant_of`, with
    `override`). Says on stderr which model and variant it uses."""
    with model_source(model_path) as source:
        if source.exported_k is None:
            tagger = Tagger(source, top_k, override=override)
        else:
            if top_k > source.exported_k:
                raise TaggerError(f"{model_path} returns {source.exported_k} tags per image "
                                  f"(export.py --top_k): ask for at most {source.exported_k}, "
                                  f"or export it again with --top_k={top_k}")
            tagger = Tagger(source, source.exported_k, keep=top_k or None, override=override)
            print(f"{model_path}: using the exported model ({tagger.exported_k} tags per image, "
                  f"{len(tagger.vocab)} in its vocabulary)", file=sys.stderr)
    print(f"{model_path}: scoring with {variants.describe(tagger.variant)}, "
          f"{tagger.variant_why}", file=sys.stderr)
    return tagger


def _check_replaceable(export_dir, archive, overwrite):
    """TaggerError unless the outputs may be written: new, or old ones of export.py replaced
    with `overwrite`; never a folder or file of something else."""
    if export_dir and os.path.exists(export_dir) and not (os.path.isdir(export_dir)
                                                          and not os.listdir(export_dir)):
        if not overwrite:
            raise TaggerError(f"{export_dir} already exists; pass --overwrite to replace it or "
                              "choose another --export_dir")
        if not exported.written_by_export(export_dir):
            raise TaggerError(f"{export_dir} exists and is not a SavedModel of export.py; "
                              "refusing to replace it, choose another --export_dir")
    if archive and os.path.exists(archive):
        if not overwrite:
            raise TaggerError(f"{archive} already exists; pass --overwrite to replace it or "
                              "choose another --archive")
        if not (os.path.isfile(archive) and exported.written_by_export(archive)):
            raise TaggerError(f"{archive} exists and is not an archive of export.py; refusing "
                              "to replace it, choose another --archive")


def _write_saved_model(folder, source, top_k, variant):
    """The tagging graph with the Source's weights as a SavedModel in the empty `folder`, in the
    test-time `variant`: its input size and mirroring in the graph, its weights in the
    variables, and its scoring config as the train_config.json asset (so the export, opened
    again, runs the same computation)."""
    config = variants.scoring_config(source.config, variant)
    graph = tf.Graph()
    with graph.as_default(), tempfile.TemporaryDirectory(prefix="export-config-") as assets:
        images = tf.placeholder(tf.string, [None], name=INPUT_NAME)
        outputs = build_tagger(images, config, source.vocab, top_k)
        paths = {name: os.path.join(source.assets_dir, name)
                 for name in (train_dir.VOCAB_FILE, train_dir.CONFIG_FILE)}
        if variant != variants.default(source.config):  # else the train_config as it is
            paths[train_dir.CONFIG_FILE] = os.path.join(assets, train_dir.CONFIG_FILE)
            atomic.write_text(paths[train_dir.CONFIG_FILE], json.dumps(
                dict(config, variant=variants.to_record(variant)), indent=2, sort_keys=True)
                + "\n")
        for name, path in paths.items():
            tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, tf.constant(
                path, name=f"asset_{name}"))
        with tf.Session(graph=graph) as session:
            _restore(session, source, source.config, reads_averages(source, variant))
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


def export_saved_model(model_path, export_dir=None, top_k=10, overwrite=False, archive=None,
                       override=None):
    """Writes the tagging graph with the weights of `model_path` (a train_dir, a checkpoint, or
    an export: re-exported, its weights in this graph) as a SavedModel in `export_dir`, and/or
    as the one-file `archive` (.tar.gz, `write_archive`).

    Signature "serving_default": input `images` (string [None], encoded JPEG/PNG/GIF/BMP bytes),
    outputs `tags` (string [None, k]) and `scores` (float32 [None, k]), best first. The
    vocabulary is a constant in the graph; vocab.txt and train_config.json are copied as assets.
    Written into a temporary folder that then replaces `export_dir` whole (data/atomic.py); the
    archive is written whole or not at all.
    The test-time variant is the model's (`variant_of`, with `override`).
    Returns dict: checkpoint, export_dir, archive, top_k, num_tags, variant.
    """
    if not (export_dir or archive):
        raise TaggerError("nothing to write: give an export folder or an archive")
    with model_source(model_path) as source:
        _check_replaceable(export_dir, archive, overwrite)
        variant, _ = variant_of(source, override)
        if export_dir:
            with atomic.atomic_dir(export_dir) as staging:
                _write_saved_model(staging, source, top_k, variant)
                if archive:
                    write_archive(staging, archive)
        else:
            with tempfile.TemporaryDirectory(prefix="export-") as staging:
                _write_saved_model(staging, source, top_k, variant)
                write_archive(staging, archive)
    return {"checkpoint": source.name, "export_dir": export_dir, "archive": archive,
            "top_k": min(top_k, len(source.vocab)), "num_tags": len(source.vocab),
            "variant": variant}
