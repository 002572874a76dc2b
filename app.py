"""A web page that tags your photos: drop, paste or pick them, see their hashtags.

    pip install -r requirements-app.txt
    python3 app.py                              # the demo's model (work/train)
    python3 app.py --model=hashtags.tar.gz      # a model someone exported
    python3 app.py --share                      # and a public link for 72 hours

then open the address it prints (http://127.0.0.1:7860 unless that port is taken). --model is
what predict.py takes: a train_dir (its best checkpoint on val), one checkpoint in it, or a model
of export.py (its SavedModel folder or .tar.gz archive). The page scores photos with predict.py's
code path (nets/photos.py), so it shows predict.py's tags and scores; see docs/app.md. The
server listens on 127.0.0.1 (this machine only) unless --host says otherwise. Ctrl-C stops it.
"""
from absl import flags

import cli
from nets import variants

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "work/train",
                    "A train_dir of train.py (its best checkpoint on val, else its newest), one "
                    "checkpoint in it (work/train/model.ckpt-2000), or a model of export.py: its "
                    "SavedModel folder or its .tar.gz archive.")
flags.DEFINE_string("host", "127.0.0.1", "The address to listen on: 127.0.0.1 is this machine "
                    "only; 0.0.0.0 opens the page to the network (anyone who reaches it can "
                    "upload photos).")
flags.DEFINE_integer("port", None, "The port to listen on (default: the first free one from "
                     "7860).", lower_bound=1, upper_bound=65535)
flags.DEFINE_bool("share", False, "Also make a public https://*.gradio.live link to the page "
                  "(Gradio's share servers; it lasts 72 hours at most).")
variants.define_flags()


def main(argv):
    if argv[1:]:
        raise cli.UserError(f"unexpected arguments {' '.join(argv[1:])}: photos are given on "
                            "the page (to tag files from the command line, use predict.py)")
    try:
        from web import page  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise cli.UserError(f"the page needs Gradio ({error}): pip install -r "
                            "requirements-app.txt") from None
    page.serve(FLAGS.model, FLAGS.host, FLAGS.port, FLAGS.share, override=variants.from_flags)


if __name__ == "__main__":
    cli.run(main)
