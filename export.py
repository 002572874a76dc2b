"""Exports a trained model as a TensorFlow SavedModel for serving (TF Serving, another app), or as
one archive to hand to someone else.

    python3 export.py --model=work/train --export_dir=work/export
    python3 export.py --model=work/train/model.ckpt-2000 --export_dir=models/hashtags/1
    python3 export.py --model=work/train --archive=hashtags.tar.gz

The SavedModel's "serving_default" signature takes `images`, a string tensor [None] of encoded
JPEG/PNG (also GIF, BMP) bytes, and returns `tags` (string [None, top_k], best first) and
`scores` (float32 [None, top_k]); the vocabulary is inside the graph, and vocab.txt and
train_config.json are in its assets/. It is the graph predict.py runs (nets/tagger.py), so both
give the same tags and scores:

    import tensorflow as tf
    serve = tf.saved_model.load("work/export").signatures["serving_default"]
    out = serve(images=tf.constant([open("photo.jpg", "rb").read()]))
    out["tags"], out["scores"]

--archive writes that SavedModel as one .tar.gz file holding one folder named after it
(hashtags.tar.gz -> hashtags/saved_model.pb, variables/, assets/): self-contained, and what
`predict.py --model=hashtags.tar.gz` takes. Given alone, only the archive is written; with
--export_dir too, both.

TF Serving expects numbered versions: use --export_dir=<model_base_path>/1, /2, ...

A SavedModel is a program: loading one runs its graph. To serve a model someone sent you,
re-export it (--model=hashtags.tar.gz): only its weights, vocabulary and config are read, into
the graph built here (docs/security.md).
"""
from absl import flags

import cli
from nets import tagger, variants

FLAGS = flags.FLAGS
DEFAULT_EXPORT_DIR = "work/export"
flags.DEFINE_string("model", "work/train",
                    "A train_dir of train.py (its newest checkpoint is used) or one checkpoint "
                    "in it, such as work/train/model.ckpt-2000; or a model of export.py (its "
                    ".tar.gz or folder, e.g. one someone sent you), re-exported: its weights in "
                    "this project's graph.")
flags.DEFINE_string("export_dir", DEFAULT_EXPORT_DIR, "Where the SavedModel is written (the "
                    "folder holding saved_model.pb, variables/ and assets/). Not written when "
                    "only --archive is given.")
flags.DEFINE_string("archive", None, "Also (or, without --export_dir, only) write the SavedModel "
                    "as this one-file archive (.tar.gz or .tgz) to hand to someone else; "
                    "predict.py --model takes it.")
flags.DEFINE_integer("top_k", 10, "Tags (and scores) returned per image, best first.",
                     lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace an existing SavedModel in --export_dir, or an "
                  "existing --archive.")
flags.register_validator("archive", lambda value: value is None or tagger.is_archive_name(value),
                         "--archive must name a .tar.gz or .tgz file")
variants.define_flags()
cli.deprecated_alias("checkpoint_path", "model")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    export_dir = FLAGS.export_dir if (FLAGS["export_dir"].present or not FLAGS.archive) else None
    summary = tagger.export_saved_model(FLAGS.model, export_dir, FLAGS.top_k,
                                        overwrite=FLAGS.overwrite, archive=FLAGS.archive,
                                        override=variants.from_flags)
    written = " and ".join(path for path in (summary["export_dir"], summary["archive"]) if path)
    print(f"exported {summary['checkpoint']} to {written}: signature "
          f"'{tagger.SIGNATURE_NAME}', input 'images' (encoded JPEG/PNG bytes [None]), outputs "
          f"'tags' and 'scores' [None, {summary['top_k']}] over {summary['num_tags']} tags; "
          f"{variants.describe(summary['variant'])}")


if __name__ == "__main__":
    cli.run(main)
