"""Tags your photos with a trained model: the top hashtags of each image and their scores.

    python3 predict.py --model=work/train photo1.jpg photo2.png some_folder/
    python3 predict.py --top_k=0 --threshold=0.3 --format=json photos/ > tags.jsonl
    python3 predict.py --model=hashtags.tar.gz photo1.jpg    # a model someone exported

--model is a train_dir (or one checkpoint in it), or what export.py wrote: its SavedModel folder
or its .tar.gz archive. Both run the same graph and give the same tags and scores; an exported
model returns at most the tags it was exported with (export.py --top_k, 10 by default).

Arguments are image files or folders (the image files directly inside, sorted; --recursive
also walks subfolders). Images are scored in batches with evaluate.py's eval preprocessing
(nets/tagger.py, the same graph export.py saves); large photos are decoded reduced and make
smaller batches (data/image_files.py, nets/photos.py: the code path the web page app.py
shares), so memory stays bounded. Output, one line per image on stdout:

    text  photos/beach.jpg: #sunset 0.91 #beach 0.84 ...
    json  {"path": "photos/beach.jpg", "tags": ["sunset", "beach"], "scores": [0.91, 0.84]}
    csv   path,tags,scores  (tags and scores space-separated, best first)

A file that is missing, not an image, not a regular file (a FIFO, a device, a link to one) or
over 64 MB gets `<path>: error: <reason>` on stderr and the others go on. Exit code: 0 all
tagged, 1 some failed, 2 nothing could run (bad flags, no model).
"""
import csv
import json
import sys

from absl import flags
from tqdm import tqdm

import cli
from data import image_files
from nets import photos, variants
from nets import tagger as tagger_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "work/train",
                    "A train_dir of train.py (its newest checkpoint is used), one checkpoint in "
                    "it (work/train/model.ckpt-2000), or a model of export.py: its SavedModel "
                    "folder or its .tar.gz archive.")
flags.DEFINE_integer("top_k", 5, "Tags shown per image, best first (0: every tag of the "
                     "vocabulary, or every tag an exported model returns; useful with "
                     "--threshold).", lower_bound=0)
flags.DEFINE_float("threshold", None, "Only show the tags (of the top --top_k) whose score is "
                   "at least this. Scores are per-tag probabilities in [0, 1] (a softmax over "
                   "the tags for models trained with --loss=softmax).")
flags.DEFINE_enum("format", "text", ["text", "json", "csv"], "text: `path: #tag score ...`; "
                  "json: one JSON object per line (path, tags, scores); csv: path,tags,scores.")
flags.DEFINE_integer("batch_size", 32, "Images per inference batch at most (large photos make "
                     "smaller batches).", lower_bound=1,
                     upper_bound=1024)
flags.DEFINE_bool("recursive", False, "For folder arguments, also tag the images in their "
                  "subfolders.")
flags.register_validator("threshold", lambda value: value is None or 0.0 <= value <= 1.0,
                         "--threshold must be a score between 0 and 1")
variants.define_flags()
cli.deprecated_alias("checkpoint_path", "model")


class Output:
    """Writes one image's result to stdout in --format, streaming (nothing held back)."""

    def __init__(self, fmt, stream=sys.stdout):
        self.format = fmt
        self.stream = stream
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(["path", "tags", "scores"])

    def write(self, path, tags, scores):
        if self.format == "text":
            shown = " ".join(f"#{tag} {score:.2f}" for tag, score in zip(tags, scores))
            self.stream.write(f"{path}: {shown or '(no tag above the threshold)'}\n")
        elif self.format == "json":
            self.stream.write(json.dumps({"path": path, "tags": list(tags),
                                          "scores": [float(score) for score in scores]},
                                         ensure_ascii=False) + "\n")
        else:
            self.csv.writerow([path, " ".join(tags), " ".join(f"{score:.6f}" for score in scores)])
        self.stream.flush()


def report_error(path, reason):
    sys.stdout.flush()  # keeps stdout and stderr lines in input order on a terminal
    print(f"{path}: error: {reason}", file=sys.stderr, flush=True)


def write_batch(tagger, batch, output, progress):
    """Tags the images of `batch` (nets/photos.batches) in one run and writes every line, in
    order. Returns how many failed."""
    failed = 0
    with tqdm.external_write_mode(file=sys.stdout):
        for path, outcome in photos.tag_batch(tagger, batch):
            if isinstance(outcome, str):  # this file's one-line reason
                report_error(path, outcome)
                failed += 1
                continue
            output.write(path, *photos.keep(*outcome, threshold=FLAGS.threshold))
    progress.update(len(batch))
    return failed


def main(argv):
    arguments = argv[1:]
    if not arguments:
        raise cli.UserError("give image files or folders to tag, e.g. predict.py photo.jpg "
                            "photos/")
    tagger = tagger_lib.open_tagger(FLAGS.model, top_k=FLAGS.top_k,
                                    override=variants.from_flags)
    entries = image_files.expand(arguments, FLAGS.recursive)
    output = Output(FLAGS.format)
    failed = 0
    # A progress bar (rate, ETA) on a terminal when there is more than one batch; result and
    # error lines are written around it.
    progress = tqdm(total=len(entries), unit="img", desc="predict", file=sys.stderr,
                    dynamic_ncols=True, disable=None if len(entries) > FLAGS.batch_size else True)
    for batch in photos.batches(entries, tagger.crop_size, FLAGS.batch_size):
        failed += write_batch(tagger, batch, output, progress)
    progress.close()
    tagger.close()
    if failed:
        tagged = len(entries) - failed
        print(f"predict.py: {failed} of {len(entries)} failed, {tagged} tagged", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
