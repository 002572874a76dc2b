"""The web page that tags photos, a Gradio app: app.py serves it, the notebook shows it inline.

Drop, paste or pick one or several photos; each gets its top hashtags with their scores as bars,
and a copy-ready line `#tag1 #tag2 ...`; a top-k and a score-threshold control choose how many
are shown. The model's name, its val scores and the variant it uses are at the top
(nets/photos.describe). Photos are scored by nets/photos.py, the code path of predict.py, so the
page gives predict.py's tags and scores for the same file.

The model is loaded once, when the page is built. Each photo set is scored once, for every tag
the model returns; the controls then only filter that (kept per browser session, at most SESSIONS
of them). A file that is not a photo the model can use (not an image, damaged, empty, too large)
gets its own message on the page, and the others their tags.

Bounds, so that a stranger's upload cannot exhaust the machine: an upload is at most
image_files.MAX_FILE_BYTES (Gradio refuses larger ones while they arrive); one photo set is
scored at a time (CONCURRENCY), on one thread, and at most QUEUE_SIZE wait (later ones are turned
away); photos are decoded as predict.py decodes them (data/image_files.py: its decompression-bomb
limit, large photos reduced to the stored size; nets/photos.BATCH_PIXELS per batch); uploads are
deleted once an hour old (CACHE). The server listens on 127.0.0.1 unless told otherwise, and calls
nothing outside (Gradio's telemetry is off).
"""
import concurrent.futures
import html
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr  # noqa: E402  (requirements-app.txt)
from PIL import Image  # noqa: E402

from data import image_files  # noqa: E402
from nets import photos  # noqa: E402
from nets import tagger as tagger_lib  # noqa: E402

TITLE = "Hashtags for your photos"
TOP_K = 5  # shown by default, as predict.py
MAX_TOP_K = 50  # the slider's end (or every tag the model returns, when fewer)
BATCH_SIZE = 32  # photos per inference batch at most, as predict.py's default
CONCURRENCY = 1  # photo sets scored at the same time
QUEUE_SIZE = 64  # photo sets waiting at most
SESSIONS = 200  # browser sessions whose scores are kept for the controls
CACHE = (3600, 3600)  # (every, older than) seconds: uploaded files deleted
BAR_COLOUR = "#f97316"


def _text(value):
    """`value` as HTML text: escaped, and without the characters Gradio's HTML templates
    substitute (`${...}`, `{{...}}`), so a file name is only ever shown."""
    return html.escape(str(value)).replace("$", "&#36;").replace("{", "&#123;").replace(
        "}", "&#125;")


def frames(path):
    """How many frames the image at `path` has (1 for a still image or an unreadable file)."""
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1)
    except Exception:  # pylint: disable=broad-except  (its error is reported by the tagging)
        return 1


class Page:
    """The tagger of one model and the page around it."""

    def __init__(self, model_path, override=None):
        # Every tag it returns, in its test-time variant (with `override`: nets/tagger.py).
        self.tagger = tagger_lib.open_tagger(model_path, top_k=0, override=override)
        self.model = photos.describe(model_path, self.tagger)
        self.crop_size = self.tagger.crop_size
        self.returned = getattr(self.tagger, "exported_k", None) or len(self.tagger.vocab)
        # Every photo is decoded and scored on this one thread, one photo set after another:
        # the memory a large photo took is then reused by the next one (each thread has its own
        # malloc arena, so decoding on Gradio's many worker threads would add up their peaks).
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tagger")

    def score(self, paths):
        """One dict per photo file, in order: name, tags and scores (every tag the model
        returns, best first) and a note (e.g. an animated image), or name and error."""
        results = []
        entries = [(path, None) for path in paths]
        for batch in photos.batches(entries, self.crop_size, BATCH_SIZE):
            for path, outcome in photos.tag_batch(self.tagger, batch):
                result = {"name": os.path.basename(path)}
                if isinstance(outcome, str):
                    result["error"] = outcome
                else:
                    result["tags"], result["scores"] = photos.keep(*outcome)
                    count = frames(path)
                    if count > 1:
                        result["note"] = f"animated ({count} frames): its first frame is tagged"
                results.append(result)
        return results

    def tag(self, gallery, top_k, threshold):
        """The page's function (API name "tag"): the photos of the gallery ([(path, caption)])
        scored, then shown with `top_k` and `threshold`. Returns the cards (HTML), the
        copy-ready lines, the results as shown (JSON) and every score (the session's state)."""
        paths = [path for path, _ in gallery or []]
        scored = self.worker.submit(self.score, paths).result()
        return (*show(scored, top_k, threshold), scored)

    def blocks(self):
        """The page, as Gradio Blocks."""
        with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE) as page:
            gr.HTML(f"<h1 style='margin:0'>{_text(TITLE)}</h1>" + model_html(self.model),
                    elem_id="model")
            with gr.Row():
                with gr.Column(scale=1):
                    gallery = gr.Gallery(label="Your photos (drop, paste or pick)",
                                         type="filepath", sources=["upload", "clipboard"],
                                         file_types=["image"], interactive=True, columns=3,
                                         height=360, elem_id="photos")
                    top_k = gr.Slider(1, min(MAX_TOP_K, self.returned), value=min(
                        TOP_K, self.returned), step=1, label="Hashtags per photo (top k)",
                                      elem_id="top_k")
                    threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.01,
                                          label="Score threshold (show a tag from this score)",
                                          elem_id="threshold")
                with gr.Column(scale=1):
                    lines = gr.Textbox(label="Hashtags, ready to copy (a line per photo)",
                                       buttons=["copy"], interactive=False, elem_id="hashtags")
                    cards = gr.HTML(elem_id="results")
                    answer = gr.JSON(label="The results as data", visible=False,
                                     elem_id="answer")
            scored = gr.State([])
            gallery.change(self.tag, [gallery, top_k, threshold],
                           [cards, lines, answer, scored], api_name="tag",
                           concurrency_limit=CONCURRENCY)
            for control in (top_k, threshold):
                control.input(show, [scored, top_k, threshold], [cards, lines, answer],
                                api_visibility="private", queue=False)
        return page


def show(scored, top_k, threshold):
    """(cards HTML, copy-ready lines, results) of `scored` (Page.score) keeping, for each photo,
    the best `top_k` tags whose score is at least `threshold`, as predict.py's --top_k and
    --threshold do."""
    shown = []
    for result in scored:
        if "error" in result:
            shown.append(result)
            continue
        tags, scores = photos.keep(result["tags"], result["scores"], int(top_k),
                                   float(threshold))
        shown.append(dict(result, tags=tags, scores=scores))
    lines = "\n".join(" ".join(f"#{tag}" for tag in result["tags"]) for result in shown
                      if "error" not in result)
    return "".join(card_html(result) for result in shown), lines, shown


def model_html(model):
    """The model line at the top of the page (photos.describe's dict)."""
    parts = [("model", model["name"]), ("network", model["network"]),
             ("val", model["val_text"]), ("variant", model["variant"])]
    return "<p>" + " &middot; ".join(
        f"<b>{name}:</b> <span class='model-{name}'>{_text(value)}</span>"
        for name, value in parts) + "</p>"


def card_html(result):
    """One photo's card: its name, then its error, or its copy-ready line and a bar per tag (the
    full score in data-score, two decimals shown)."""
    name = _text(result["name"])
    head = f"<section class='photo' data-name='{name}' style='margin:0 0 1em 0'>" + (
        f"<h3 style='margin:0 0 .3em 0'>{name}</h3>")
    if "error" in result:
        return (head + f"<p class='photo-error' style='color:#b91c1c;margin:0'>&#9888; "
                f"{_text(result['error'])}</p></section>")
    body = (f"<p class='photo-note' style='margin:0'>{_text(result['note'])}</p>"
            if "note" in result else "")
    if not result["tags"]:
        return head + body + "<p class='hashtags'>(no tag above the threshold)</p></section>"
    body += "<p class='hashtags' style='font-family:monospace;margin:0 0 .3em 0'>{}</p>".format(
        _text(" ".join(f"#{tag}" for tag in result["tags"])))
    for tag, score in zip(result["tags"], result["scores"]):
        width = max(0.0, min(1.0, score)) * 100
        body += (
            f"<div class='tag' data-tag='{_text(tag)}' data-score='{score!r}' "
            "style='display:flex;align-items:center;gap:.5em;margin:.15em 0'>"
            f"<span style='width:9em;overflow:hidden;text-overflow:ellipsis'>#{_text(tag)}</span>"
            "<span style='flex:1;background:#e5e7eb;border-radius:4px;height:.8em'>"
            f"<span style='display:block;height:100%;width:{width:.1f}%;"
            f"background:{BAR_COLOUR};border-radius:4px'></span></span>"
            f"<span class='score' style='width:3em;text-align:right'>{score:.2f}</span></div>")
    return head + body + "</section>"


def serve(model_path, host="127.0.0.1", port=None, share=False, block=True, override=None):
    """Builds the page on the model at `model_path` (loaded once) and serves it on host:port
    (None: the first free port from 7860), with a public share link when `share`; in a notebook
    it also shows inline. Blocks until interrupted when `block`; else returns the running
    Blocks (close() stops them). `override` changes the model's test-time variant."""
    page = Page(model_path, override).blocks()
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    page.launch(server_name=host, server_port=port, share=share,
                max_file_size=image_files.MAX_FILE_BYTES, state_session_capacity=SESSIONS,
                prevent_thread_lock=True, footer_links=["api"], quiet=True)
    shared = f" and {page.share_url}" if page.share_url else ""
    print(f"serving the page on {page.local_url}{shared}" + ("; Ctrl-C stops it" if block
                                                             else ""), flush=True)
    if block:
        page.block_thread()
    return page
