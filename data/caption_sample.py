"""A second generated dataset, in another format and vocabulary than the built-in sample: a CSV of
Instagram-like posts (a photo and a caption with #hashtags), as a brand's account would export.

Drawn like the built-in sample (data/sample.py), deterministic from a seed, a few hundred photos.
Its hashtags follow what is drawn, so they are learnable from the pixels; some are the sample's
(`beach`, `snow`, `forest` scenes; `sun`, `tree`, `boat`; `summer`, `love`), the others new
(`desert`, `field`, `underwater` scenes; `cactus`, `kite`, `balloon`, `fish`; other social
tags). A model trained on the sample can be adapted to it; preprocess.py reads it with
`--table=<folder>/posts.csv`. Captions are written as people write them: any case, tags
mid-sentence, `C#`-like false hashtags, a few captions with no hashtag at all.
"""
import csv
import os
import random

from data import sample

GENERATOR_VERSION = 1
DEFAULT_IMAGES = 300
TABLE = "posts.csv"

SCENES = ("beach", "snow", "forest", "desert", "field", "underwater")
SCENE_OBJECTS = {
    "beach": {"sun": 0.5, "boat": 0.4, "kite": 0.4},
    "snow": {"tree": 0.6, "balloon": 0.3},
    "forest": {"tree": 0.8, "balloon": 0.3},
    "desert": {"cactus": 0.8, "sun": 0.6},
    "field": {"kite": 0.5, "balloon": 0.5, "tree": 0.4},
    "underwater": {"fish": 0.9},
}
SCENE_CONTEXT = {"beach": {"summer": 0.7}, "snow": {"winter": 0.8}, "desert": {"summer": 0.5},
                 "field": {"spring": 0.6}, "underwater": {"diving": 0.7}, "forest": {}}
SOCIAL = {"love": 0.3, "ootd": 0.3, "weekendvibes": 0.25, "explore": 0.2, "shoplocal": 0.15}
WORDINGS = ("{tags}", "What a day! {tags}", "{tags} — new drop in store now",
            "Weekend plans: {tags} (coded in C# by our intern)", "Merci! {tags}")


def _background(draw, scene, width, height, rng):
    """The scene's background; returns the ground line's y (as data/sample.py's)."""
    if scene in sample.SCENES:
        return sample._background(draw, scene, width, height, rng)
    horizon = int(height * rng.uniform(0.55, 0.72))
    if scene == "desert":
        sample._gradient(draw, (0, 0, width, horizon), sample._jitter((240, 170, 90), rng),
                         (250, 220, 160))
        sample._gradient(draw, (0, horizon, width, height), (225, 180, 110), (200, 150, 80))
        return horizon
    if scene == "field":
        sample._gradient(draw, (0, 0, width, horizon), (110, 170, 245), (200, 225, 250))
        sample._gradient(draw, (0, horizon, width, height), sample._jitter((120, 200, 60), rng),
                         (80, 160, 40))
        return horizon
    sample._gradient(draw, (0, 0, width, height), sample._jitter((20, 120, 150), rng),
                     (5, 40, 80))  # underwater
    for _ in range(rng.randint(5, 12)):  # bubbles
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(2, 4)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(200, 240, 255))
    return height


def _draw(draw, name, scene, ground, width, height, rng):
    if name in ("sun", "tree", "boat"):
        colour = sample.COLOURS[rng.choice(sorted(sample.COLOURS))]
        sample._draw_object(draw, name, colour, scene, ground, width, height, rng)
        return
    s = rng.uniform(0.8, 1.3) * min(width, height) / 160
    x = rng.randint(int(25 * s), width - int(25 * s))
    base = min(height - 2, ground + rng.randint(0, max(1, (height - ground) // 2)))
    if name == "cactus":
        green = (40, 130, 60)
        draw.rectangle([x - int(5 * s), base - int(45 * s), x + int(5 * s), base], fill=green)
        draw.rectangle([x - int(18 * s), base - int(30 * s), x - int(5 * s), base - int(24 * s)],
                       fill=green)
        draw.rectangle([x - int(18 * s), base - int(40 * s), x - int(12 * s), base - int(24 * s)],
                       fill=green)
    elif name == "kite":
        y, r = rng.randint(int(20 * s), int(50 * s)), int(12 * s)
        draw.polygon([(x, y - r), (x + r, y), (x, y + int(1.6 * r)), (x - r, y)],
                     fill=(230, 40, 40), outline=(250, 250, 250))
        draw.line([(x, y + int(1.6 * r)), (x - int(20 * s), base)], fill=(60, 60, 60))
    elif name == "balloon":
        y, r = rng.randint(int(25 * s), int(60 * s)), int(10 * s)
        draw.ellipse([x - r, y - int(1.3 * r), x + r, y + int(1.3 * r)], fill=(250, 120, 200))
        draw.line([(x, y + int(1.3 * r)), (x + int(4 * s), y + int(45 * s))], fill=(80, 80, 80))
    elif name == "fish":
        y, w = rng.randint(int(30 * s), height - int(30 * s)), int(16 * s)
        draw.ellipse([x - w, y - int(8 * s), x + w, y + int(8 * s)], fill=(250, 160, 30))
        draw.polygon([(x + w - 2, y), (x + w + int(12 * s), y - int(9 * s)),
                      (x + w + int(12 * s), y + int(9 * s))], fill=(250, 160, 30))


def draw_post(rng):
    """(PIL image, hashtags, caption) of one post."""
    image, draw, scene, ground, objects = sample.start_picture(
        rng, [(192, 192)] * 5 + [(224, 160), (160, 224)], SCENES, SCENE_OBJECTS, _background)
    width, height = image.size
    for name in objects:
        _draw(draw, name, scene, ground, width, height, rng)
    tags = [scene] + objects + [tag for tag, p in SCENE_CONTEXT[scene].items()
                                if rng.random() < p]
    tags += [tag for tag, p in SOCIAL.items() if rng.random() < p]
    if rng.random() < 0.03:  # a post whose caption has no hashtag: preprocess.py reports it
        return image, [], rng.choice(("Thank you all!", "Back soon"))
    written = " ".join("#" + (tag.upper() if rng.random() < 0.1 else
                              tag.capitalize() if rng.random() < 0.2 else tag) for tag in tags)
    return image, tags, rng.choice(WORDINGS).format(tags=written)


def write_caption_sample(root, num_images=DEFAULT_IMAGES, seed=1):
    """Writes `root/posts.csv` (path, caption) and the photos under `root/photos/`."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "photos"), exist_ok=True)
    rows = []
    for index in range(num_images):
        image, _, caption = draw_post(rng)
        path = f"photos/post_{index:04d}.jpg"
        image.save(os.path.join(root, path), format="JPEG", quality=90)
        rows.append((path, caption))
    with open(os.path.join(root, TABLE), "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("path", "caption"))
        writer.writerows(rows)


def ensure_caption_sample(folder, num_images=DEFAULT_IMAGES, seed=1):
    """Path of the posts table under `folder` (`<folder>/posts/posts.csv`), generated unless
    there already with the same parameters; written whole or not at all (data/atomic.py)."""
    root = os.path.join(folder, "posts")
    info = {"generator_version": GENERATOR_VERSION, "images": num_images, "seed": seed}
    sample.ensure_generated(root, info,
                            lambda target: write_caption_sample(target, num_images, seed))
    return os.path.join(root, TABLE)
