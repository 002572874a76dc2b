"""Exports a trained model as a TensorFlow SavedModel for serving (TF Serving, another app).

    python3 export.py --checkpoint_path=work/train --export_dir=work/export
    python3 export.py --checkpoint_path=work/train/model.ckpt-2000 --export_dir=models/hashtags/1

The SavedModel's "serving_default" signature takes `images`, a string tensor [None] of encoded
JPEG/PNG (also GIF, BMP) bytes, and returns `tags` (string [None, top_k], best first) and
`scores` (float32 [None, top_k]); the vocabulary is inside the graph. It is the graph predict.py
runs (nets/tagger.py), so both give the same tags and scores:

    import tensorflow as tf
    serve = tf.saved_model.load("work/export").signatures["serving_default"]
    out = serve(images=tf.constant([open("photo.jpg", "rb").read()]))
    out["tags"], out["scores"]

TF Serving expects numbered versions: use --export_dir=<model_base_path>/1, /2, ...
"""
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", "work/train",
                    "A train_dir of train.py (its latest checkpoint is used) or one checkpoint "
                    "prefix such as work/train/model.ckpt-2000.")
flags.DEFINE_string("export_dir", "work/export", "Where the SavedModel is written (the folder "
                    "holding saved_model.pb, variables/ and assets/).")
flags.DEFINE_integer("top_k", 10, "Tags (and scores) returned per image, best first.")
flags.DEFINE_bool("overwrite", False, "Replace an existing SavedModel in --export_dir.")


def fail(message):
    print(f"export.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.top_k < 1:
        fail("--top_k must be >= 1")
    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines about every saved asset
        logging.set_verbosity(logging.WARNING)
    from nets import tagger, tagging

    try:
        summary = tagger.export_saved_model(FLAGS.checkpoint_path, FLAGS.export_dir,
                                            FLAGS.top_k, overwrite=FLAGS.overwrite)
    except (tagging.TrainDirError, tagger.TaggerError, ValueError, OSError) as error:
        fail(str(error))
    print(f"exported {summary['checkpoint']} to {summary['export_dir']}: signature "
          f"'{tagger.SIGNATURE_NAME}', input 'images' (encoded JPEG/PNG bytes [None]), outputs "
          f"'tags' and 'scores' [None, {summary['top_k']}] over {summary['num_tags']} tags")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
