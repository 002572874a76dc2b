"""The built-in sample: a small HARRISON-format dataset drawn with PIL, deterministic, no download.

Each image is a scene (sky, sunset, night, beach, sea, forest, snow: background colours and
gradients) with 0-3 drawn objects (sun, moon, tree, car, ball, house, boat, flower), the
colours of those objects, and sometimes a black-and-white rendering. Its hashtags follow what
is drawn: the scene (always, first, and its folder like HARRISON's seed hashtag), each object,
each object colour, `blackandwhite`, plus context tags that only usually hold (`summer` on a
beach, `winter` in snow...). On top come HARRISON-like social tags (love, instagood,
photooftheday...) drawn independently of the picture, frequent enough to top the vocabulary:
the most-popular-tags baseline predicts them, and a model beats it only by looking at pixels.

Written exactly like HARRISON: data_list.txt, tag_list.txt (trailing space), vocab_index.txt
(`tag<spaces>id`, by frequency), instagram_dataset/<scene>/image_<n>.jpg.
"""
import json
import os
import random

from PIL import Image, ImageDraw

from data import atomic, harrison

GENERATOR_VERSION = 1
DEFAULT_IMAGES = 600

SCENES = ("sky", "sunset", "night", "beach", "sea", "forest", "snow")
# Objects that can appear in each scene, with their probability.
SCENE_OBJECTS = {
    "sky": {"sun": 0.5, "tree": 0.35, "car": 0.3, "ball": 0.3, "house": 0.35, "flower": 0.3},
    "sunset": {"sun": 0.7, "boat": 0.35, "tree": 0.3, "house": 0.25},
    "night": {"moon": 0.75, "car": 0.4, "house": 0.4},
    "beach": {"sun": 0.5, "ball": 0.5, "boat": 0.25, "tree": 0.25},
    "sea": {"sun": 0.4, "boat": 0.6},
    "forest": {"tree": 0.8, "house": 0.3, "flower": 0.4, "car": 0.2},
    "snow": {"tree": 0.45, "house": 0.4, "car": 0.3, "sun": 0.3},
}
# Context tags that usually, not always, come with a scene (like real users' hashtags).
SCENE_CONTEXT = {
    "sky": {"clouds": 0.4}, "sunset": {"summer": 0.4}, "night": {"city": 0.3},
    "beach": {"summer": 0.7, "vacation": 0.5}, "sea": {"summer": 0.4, "vacation": 0.4},
    "forest": {"nature": 0.7}, "snow": {"winter": 0.8},
}
COLOURS = {"red": (220, 30, 40), "blue": (30, 70, 220), "yellow": (245, 210, 20),
           "pink": (245, 120, 190), "purple": (130, 40, 170)}
COLOURED_OBJECTS = ("car", "ball", "house", "boat", "flower")
SOCIAL = {"love": 0.45, "instagood": 0.35, "photooftheday": 0.3, "follow": 0.25,
          "like4like": 0.22, "happy": 0.2, "instadaily": 0.18, "tbt": 0.15, "fun": 0.15,
          "me": 0.12}
BLACK_AND_WHITE = 0.08


def _mix(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _jitter(colour, rng, amount=18):
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)


def _gradient(draw, box, top, bottom):
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        draw.line([(x0, y), (x1, y)], fill=_mix(top, bottom, (y - y0) / max(1, y1 - y0 - 1)))


def _background(draw, scene, width, height, rng):
    """Draws the scene; returns the y of its ground line (where objects stand)."""
    horizon = int(height * rng.uniform(0.55, 0.72))
    if scene == "sky":
        _gradient(draw, (0, 0, width, height), _jitter((70, 140, 230), rng), (190, 225, 250))
        for _ in range(rng.randint(1, 3)):  # clouds
            cx, cy, r = rng.randint(0, width), rng.randint(5, height // 3), rng.randint(8, 18)
            for dx in (-r, 0, r):
                draw.ellipse([cx + dx - r, cy - r // 2, cx + dx + r, cy + r], fill=(250, 250, 250))
        return height
    if scene == "sunset":
        _gradient(draw, (0, 0, width, horizon), _jitter((90, 40, 120), rng), (250, 140, 50))
        _gradient(draw, (0, horizon, width, height), (120, 60, 70), (40, 20, 40))
        return horizon
    if scene == "night":
        _gradient(draw, (0, 0, width, height), _jitter((10, 15, 45), rng, 8), (30, 35, 70))
        for _ in range(rng.randint(15, 40)):
            x, y = rng.randrange(width), rng.randrange(horizon)
            draw.point((x, y), fill=(255, 255, 220))
        return height
    if scene == "beach":
        _gradient(draw, (0, 0, width, horizon), (90, 170, 240), (200, 230, 250))
        _gradient(draw, (0, horizon, width, height), _jitter((240, 215, 150), rng), (215, 185, 120))
        return horizon
    if scene == "sea":
        _gradient(draw, (0, 0, width, horizon), (120, 180, 240), (210, 235, 250))
        _gradient(draw, (0, horizon, width, height), _jitter((20, 90, 170), rng), (10, 40, 110))
        for _ in range(rng.randint(4, 9)):  # waves
            x, y = rng.randrange(width), rng.randint(horizon + 4, height - 3)
            draw.arc([x, y - 3, x + 14, y + 3], 180, 360, fill=(220, 240, 255), width=1)
        return horizon
    if scene == "forest":
        _gradient(draw, (0, 0, width, horizon), (150, 200, 160), (90, 150, 100))
        _gradient(draw, (0, horizon, width, height), _jitter((40, 110, 40), rng), (20, 70, 25))
        for _ in range(rng.randint(4, 8)):  # dark pines in the back
            x = rng.randrange(width)
            draw.polygon([(x - 10, horizon), (x + 10, horizon), (x, horizon - rng.randint(25, 45))],
                         fill=(20, 70, 35))
        return horizon
    # snow
    _gradient(draw, (0, 0, width, horizon), _jitter((185, 200, 215), rng), (225, 230, 240))
    _gradient(draw, (0, horizon, width, height), (250, 250, 252), (225, 230, 240))
    for _ in range(rng.randint(20, 50)):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(255, 255, 255))
    return horizon


def _draw_object(draw, name, colour, scene, ground, width, height, rng):
    s = rng.uniform(0.8, 1.3) * min(width, height) / 160  # object scale
    x = rng.randint(int(20 * s), width - int(20 * s))
    base = min(height - 2, ground + rng.randint(0, max(1, (height - ground) // 2)))
    if name == "sun":
        r, y = int(14 * s), rng.randint(int(18 * s), max(int(19 * s), ground - int(30 * s)))
        fill = (250, 120, 40) if scene == "sunset" else (255, 220, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif name == "moon":
        r, y = int(13 * s), rng.randint(int(16 * s), int(50 * s))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(245, 245, 210))
        draw.ellipse([x - r + int(8 * s), y - r - 2, x + r + int(8 * s), y + r - 2], fill=(15, 20, 50))
    elif name == "tree":
        trunk, crown = int(4 * s), int(16 * s)
        draw.rectangle([x - trunk, base - int(22 * s), x + trunk, base], fill=(110, 70, 30))
        draw.ellipse([x - crown, base - int(50 * s), x + crown, base - int(18 * s)], fill=(30, 140, 40))
    elif name == "car":
        w, h = int(26 * s), int(9 * s)
        draw.rectangle([x - w, base - 2 * h, x + w, base - int(4 * s)], fill=colour)
        draw.rectangle([x - w // 2, base - 3 * h, x + w // 2, base - 2 * h], fill=colour)
        for wx in (x - w // 2, x + w // 2):
            r = int(6 * s)
            draw.ellipse([wx - r, base - 2 * r, wx + r, base], fill=(20, 20, 20))
    elif name == "ball":
        r = int(10 * s)
        draw.ellipse([x - r, base - 2 * r, x + r, base], fill=colour, outline=(255, 255, 255))
    elif name == "house":
        w = int(20 * s)
        draw.rectangle([x - w, base - int(30 * s), x + w, base], fill=colour)
        draw.polygon([(x - w - 4, base - int(30 * s)), (x + w + 4, base - int(30 * s)),
                      (x, base - int(52 * s))], fill=(120, 50, 40))
        draw.rectangle([x - int(5 * s), base - int(14 * s), x + int(5 * s), base], fill=(70, 40, 20))
    elif name == "boat":
        w, y = int(24 * s), max(int(30 * s), ground + int(6 * s))
        draw.polygon([(x - w, y), (x + w, y), (x + w - 8, y + int(9 * s)), (x - w + 8, y + int(9 * s))],
                     fill=colour)
        draw.line([(x, y), (x, y - int(30 * s))], fill=(60, 40, 20), width=2)
        draw.polygon([(x + 2, y - int(28 * s)), (x + 2, y - 3), (x + int(18 * s), y - 3)],
                     fill=(250, 250, 250))
    elif name == "flower":
        r, y = int(5 * s), base - int(18 * s)
        draw.line([(x, y), (x, base)], fill=(30, 120, 30), width=2)
        for dx, dy in ((-r, 0), (r, 0), (0, -r), (0, r)):
            draw.ellipse([x + dx - r, y + dy - r, x + dx + r, y + dy + r], fill=colour)
        draw.ellipse([x - r // 2, y - r // 2, x + r // 2, y + r // 2], fill=(250, 220, 40))


def start_picture(rng, sizes, scenes, scene_objects, background):
    """A picture's size drawn from `sizes`, its scene from `scenes` painted by `background`
    (returning the ground line's y), and the objects of `scene_objects[scene]` ({name:
    probability}) that it will show, drawn by chance; the caller draws them. Returns (image,
    its ImageDraw, scene, ground y, object names). Shared with data/caption_sample.py."""
    width, height = rng.choice(sizes)
    scene = rng.choice(scenes)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    ground = background(draw, scene, width, height, rng)
    objects = [name for name, p in scene_objects[scene].items() if rng.random() < p]
    return image, draw, scene, ground, objects


def draw_sample_image(rng):
    """(PIL image, hashtags) of one sample photo; the tags describe what is drawn."""
    image, draw, scene, ground, objects = start_picture(
        rng, [(192, 192)] * 6 + [(224, 160), (160, 224)], SCENES, SCENE_OBJECTS, _background)
    width, height = image.size
    objects = objects[:3]
    tags, colours = [scene], []
    for name in objects:
        colour_name = rng.choice(sorted(COLOURS)) if name in COLOURED_OBJECTS else None
        _draw_object(draw, name, COLOURS.get(colour_name), scene, ground, width, height, rng)
        tags.append(name)
        if colour_name and colour_name not in colours:
            colours.append(colour_name)
    if rng.random() < BLACK_AND_WHITE:
        image = image.convert("L")  # saved as a grayscale JPEG, as some real uploads are
        tags.append("blackandwhite")
    else:
        tags.extend(colours)
    tags.extend(tag for tag, p in SCENE_CONTEXT[scene].items() if rng.random() < p)
    social = [tag for tag, p in SOCIAL.items() if rng.random() < p]
    rest = tags[1:] + social
    rng.shuffle(rest)
    return image, [scene] + rest


def write_sample(root, num_images=DEFAULT_IMAGES, seed=0):
    """Writes the sample in HARRISON's layout into the (new) directory `root`."""
    rng = random.Random(seed)
    per_folder, paths, tag_lines = {}, [], []
    for _ in range(num_images):
        image, tags = draw_sample_image(rng)
        folder = tags[0]
        per_folder[folder] = per_folder.get(folder, 0) + 1
        path = f"instagram_dataset/{folder}/image_{per_folder[folder]}.jpg"
        os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
        image.save(os.path.join(root, path), format="JPEG", quality=90)
        paths.append(path)
        tag_lines.append(" ".join(tags) + " ")
    counts = {}
    for line in tag_lines:
        for tag in line.split():
            counts[tag] = counts.get(tag, 0) + 1
    vocab = sorted(counts, key=lambda tag: (-counts[tag], tag))
    atomic.write_text(os.path.join(root, harrison.DATA_LIST), "\n".join(paths) + "\n")
    atomic.write_text(os.path.join(root, harrison.TAG_LIST), "\n".join(tag_lines) + "\n")
    harrison.write_vocab_index(os.path.join(root, harrison.VOCAB_INDEX), vocab)


def ensure_sample(sample_dir, num_images=DEFAULT_IMAGES, seed=0):
    """Path of the sample dataset (`<sample_dir>/HARRISON`), generated unless already there.

    Generated in a temporary directory that replaces `root` whole (data/atomic.py), so a killed
    run never leaves half a dataset; an existing sample of other parameters is replaced.
    """
    root = os.path.join(sample_dir, "HARRISON")
    info = {"generator_version": GENERATOR_VERSION, "images": num_images, "seed": seed}
    ensure_generated(root, info, lambda folder: write_sample(folder, num_images, seed))
    return root


def ensure_generated(root, info, write):
    """Makes `root` by `write(folder)` unless it holds a dataset generated with `info` already
    (its sample_info.json); written in a temporary folder that replaces `root` whole
    (data/atomic.py). Shared with data/caption_sample.py."""
    # Also when the dataset is there already: a run killed after swapping in a new one left the
    # old one beside it.
    atomic.remove_leftovers(root)
    info_path = os.path.join(root, "sample_info.json")
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as handle:
            if json.load(handle) == info:
                return
    with atomic.atomic_dir(root) as temporary:
        write(temporary)
        with open(os.path.join(temporary, "sample_info.json"), "w", encoding="utf-8") as handle:
            json.dump(info, handle)
