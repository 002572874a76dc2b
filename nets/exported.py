"""What export.py wrote, read as data: a model's weights, vocabulary and config, never its graph.

An exported model (a SavedModel folder, or the .tar.gz archive of export.py --archive) may come
from someone else, and its saved_model.pb is a TensorFlow graph: a program, whose ops can read
and write files or open connections. So that graph never runs here. `open_export` reads
- the assets, train_config.json and vocab.txt, checked as a train_dir's (nets/train_dir.load);
- the signature's number of tags per image (saved_model.pb parsed as a protobuf: data);
- the variables (a checkpoint: named tensors), once the caller has built THE tagging graph from
  the config (nets/tagger.py) and knows the bytes its variables take.
So a model archive runs exactly this project's graph, whatever its saved_model.pb holds.

An archive is read as data/safe_archive.py reads any (no links, no special files, nothing outside
its folder, MAX_ARCHIVE_BYTES declared at most), and only those members are extracted, each
capped before a byte of it is written: the assets and saved_model.pb at MAX_SMALL_BYTES, the
variables at the bytes of the graph's variables (plus VARIABLES_SLACK). They go to a temporary
folder that is removed when done, also when the process gets SIGTERM or SIGHUP.
"""
import contextlib
import os
import re
import shutil
import tempfile

from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

import cli
from data import safe_archive
from nets import train_dir

SAVED_MODEL_FILE = "saved_model.pb"
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("tags", "scores")
ASSETS = (train_dir.CONFIG_FILE, train_dir.VOCAB_FILE)
MAX_SMALL_BYTES = 64 * 2**20  # saved_model.pb, variables.index and each asset
MAX_ARCHIVE_BYTES = 4 * 2**30  # every member declared: beyond, not read further
MAX_ARCHIVE_MEMBERS = 1000
VARIABLES_SLACK = 2**20
_VARIABLES = re.compile(r"^variables/variables\.(index|data-\d{5}-of-\d{5})$")


class ExportError(cli.UserError):
    """An export that cannot be used."""


def is_export_folder(path):
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


_EXPORT_ENTRIES = {"", SAVED_MODEL_FILE, "fingerprint.pb", "assets", "variables"} | {
    f"assets/{name}" for name in ASSETS}


def written_by_export(path):
    """Whether `path` holds exactly what export.py writes (a SavedModel folder, or an archive
    of one folder holding it), so that --overwrite may replace it. An archive is read up to
    its first member that does not fit."""
    if os.path.isdir(path):
        names = {os.path.relpath(os.path.join(folder, name), path)
                 for folder, folders, files in os.walk(path) for name in folders + files}
        return _export_layout(names)
    tops, names = set(), set()
    try:
        with safe_archive.open_tar(path) as tar:
            for member in tar:
                top, _, rest = member.name.partition("/")
                tops.add(top)
                names.add(rest)
                if len(tops) > 1 or not (rest in _EXPORT_ENTRIES or _VARIABLES.match(rest)):
                    return False
    except (safe_archive.NotATar, safe_archive.ArchiveRefused, OSError) + safe_archive.CORRUPT:
        return False
    return _export_layout(names)


def _export_layout(names):
    return (all(name in _EXPORT_ENTRIES or _VARIABLES.match(name) for name in names)
            and {SAVED_MODEL_FILE, *(f"assets/{name}" for name in ASSETS)} <= names)


def variable_bytes(variables):
    """The bytes a checkpoint of `variables` (tf.Variable) holds."""
    return sum(variable.shape.num_elements() * variable.dtype.base_dtype.size
               for variable in variables)


class Export:
    """An export's assets and signature, read: config, vocab, top_k (tags per image it was
    exported with), assets_dir; `weights(variables)` gives the checkpoint prefix of its
    variables, once their size is known to fit `variables` (the graph's)."""

    def __init__(self, path, assets_dir, saved_model, weights):
        self.path = path
        self.assets_dir = assets_dir
        try:
            self.config, self.vocab = train_dir.load(assets_dir)
        except train_dir.TrainDirError as error:  # named as in the export, not the temporary
            raise ExportError(f"{path}: {str(error).replace(assets_dir, 'assets')}") from None
        self.top_k = _exported_k(path, _read_small(path, saved_model))
        self._weights = weights

    def weights(self, variables):
        return self._weights(variable_bytes(variables) + VARIABLES_SLACK)


def _read_small(path, file_path):
    size = os.path.getsize(file_path)
    if size > MAX_SMALL_BYTES:
        raise ExportError(f"{path}: {os.path.basename(file_path)} has {size:,} bytes, more than "
                          f"the {MAX_SMALL_BYTES:,} it may have")
    with open(file_path, "rb") as stream:
        return stream.read()


def _exported_k(path, data):
    """The tags per image of the serving signature in saved_model.pb's bytes."""
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ExportError(f"{path}: its {SAVED_MODEL_FILE} is not a SavedModel") from None
    for meta_graph in saved_model.meta_graphs:
        signature = meta_graph.signature_def.get(SIGNATURE_NAME)
        if (signature is None or INPUT_NAME not in signature.inputs
                or set(OUTPUT_NAMES) - set(signature.outputs)):
            continue
        dims = signature.outputs["tags"].tensor_shape.dim
        if len(dims) == 2 and dims[1].size > 0:
            return dims[1].size
    raise ExportError(f"{path} has no '{SIGNATURE_NAME}' signature taking '{INPUT_NAME}' and "
                      "returning tags and scores: not a model of export.py")


def _too_large(path, size, max_bytes):
    return ExportError(f"{path}: its variables declare {size:,} bytes, more than the "
                       f"{max_bytes:,} of the model its {train_dir.CONFIG_FILE} describes")


def _folder_export(path):
    """An Export of a SavedModel folder on disk: nothing is copied."""
    for name in ASSETS:
        if not os.path.isfile(os.path.join(path, "assets", name)):
            raise ExportError(f"{path} is not a model of export.py: assets/{name} is missing")
    variables = os.path.join(path, "variables")

    def weights(max_bytes):
        data = sum(os.path.getsize(os.path.join(variables, name))
                   for name in (os.listdir(variables) if os.path.isdir(variables) else ())
                   if name.startswith("variables.data-"))
        if data > max_bytes:
            raise _too_large(path, data, max_bytes)
        return os.path.join(variables, "variables")

    return Export(path, os.path.join(path, "assets"), os.path.join(path, SAVED_MODEL_FILE),
                  weights)


def _files(tar):
    """(member, its name inside the export) of each file of the archive, checked and counted as
    its header is read (data/safe_archive.py). The export is the archive's one folder, named by
    its first member, or its top when that is already saved_model.pb, assets or variables."""
    root = None
    for member in safe_archive.checked_members(tar, MAX_ARCHIVE_MEMBERS, MAX_ARCHIVE_BYTES):
        if root is None:
            top = member.name.split("/")[0]
            root = "" if top in (SAVED_MODEL_FILE, "assets", "variables") or not (
                member.isdir() or "/" in member.name) else top + "/"
        if member.isfile() and member.name.startswith(root):
            yield member, member.name[len(root):]


def _write(tar, member, folder, name):
    target = os.path.join(folder, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    safe_archive.copy_member(tar, member, target)


def _extract_small(path, folder):
    """saved_model.pb and the assets, written into `folder`, each once its declared size is
    within MAX_SMALL_BYTES; the archive is read only up to the last of them."""
    left = {SAVED_MODEL_FILE, *(f"assets/{name}" for name in ASSETS)}
    with safe_archive.open_tar(path) as tar:
        for member, name in _files(tar):
            if name in left:
                if member.size > MAX_SMALL_BYTES:
                    raise ExportError(f"{path}: {name} declares {member.size:,} bytes, more "
                                      f"than the {MAX_SMALL_BYTES:,} it may have")
                _write(tar, member, folder, name)
                left.remove(name)
                if not left:
                    return
    if SAVED_MODEL_FILE in left:
        raise ExportError(f"{path} holds no SavedModel ({SAVED_MODEL_FILE}): is it an archive "
                          "of export.py --archive?")
    raise ExportError(f"{path} is not a model of export.py: {sorted(left)[0]} is missing")


def _extract_variables(path, folder, max_bytes):
    """variables/ written into `folder` while the data its headers declare stays within
    `max_bytes` (refused at the header that passes it); the checkpoint prefix."""
    data = 0
    with safe_archive.open_tar(path) as tar:
        for member, name in _files(tar):
            if _VARIABLES.match(name):
                data += member.size if ".data-" in name else 0
                if max(data, member.size) > max_bytes:
                    raise _too_large(path, max(data, member.size), max_bytes)
                _write(tar, member, folder, name)
    return os.path.join(folder, "variables", "variables")


def _archive_export(path, folder):
    """An Export of an archive: its assets and saved_model.pb extracted into `folder` now, its
    variables when `weights` is called, once the graph says how large they may be."""
    _extract_small(path, folder)

    def weights(max_bytes):
        with _reading(path):
            return _extract_variables(path, folder, max_bytes)

    return Export(path, os.path.join(folder, "assets"), os.path.join(folder, SAVED_MODEL_FILE),
                  weights)


@contextlib.contextmanager
def _reading(path):
    """ExportError, naming the archive `path`, for what reading it may raise."""
    try:
        yield
    except safe_archive.NotATar as error:
        raise ExportError(f"{path} {error}") from None
    except safe_archive.ArchiveRefused as error:
        raise ExportError(f"{path}: {error}") from None
    except safe_archive.CORRUPT as error:
        raise ExportError(f"{path} is truncated or corrupt ({cli.first_line(error)})") from None


@contextlib.contextmanager
def open_export(path):
    """The Export of `path`, a SavedModel folder of export.py or its .tar.gz archive (extracted
    into a temporary folder, removed when the block ends, SIGTERM included)."""
    if os.path.isdir(path):
        yield _folder_export(path)
        return
    with cli.interruptible():
        folder = tempfile.mkdtemp(prefix="exported-model-")
        try:
            with _reading(path):
                export = _archive_export(path, folder)
            yield export
        finally:
            shutil.rmtree(folder, ignore_errors=True)
