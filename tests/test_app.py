"""app.py, the web page, as people and programs reach it: a real headless Chromium uploads photos
and reads the tags from the page; a Gradio client in this process calls the page's function on
the server (another process); bad files, 20 concurrent requests, memory, the address it binds.
Every answer is checked against predict.py's on the same files.

The server is started once for the module (app.py on the session's tiny model, on a free
loopback port, its uploads in a temporary folder) and stopped at the end.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_script

STARTUP_SECONDS = 300  # TensorFlow, Gradio and the model, on a busy 2-core machine
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), "/usr/bin/chromedriver"
# Chromium without a profile, updates or background traffic; every address but loopback goes
# to a closed port (a dead proxy), so the page can reach nothing outside this machine.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1280,900", "--proxy-server=http://127.0.0.1:9")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_dir, tmp_path_factory):
    """app.py serving the session's model; dict: url, process, port, log (its stdout and
    stderr)."""
    root = tmp_path_factory.mktemp("app")
    port, log = free_port(), root / "server.log"
    env = dict(os.environ, GRADIO_TEMP_DIR=str(root / "uploads"))
    with open(log, "w", encoding="utf-8") as stream:
        process = subprocess.Popen([sys.executable, os.path.join(REPO, "app.py"),
                                    f"--model={trained_dir}", f"--port={port}"], cwd=REPO,
                                   env=env, stdout=stream, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    while f"serving the page on {url}" not in log.read_text(encoding="utf-8"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"app.py did not start:\n{log.read_text(encoding='utf-8')[-4000:]}")
        time.sleep(0.5)
    yield {"url": url, "process": process, "port": port, "log": log}
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def bad_files(sample_photos, tmp_path_factory):
    """{name: path}: files that are no photo the model can use (not an image, a JPEG cut
    short, an empty file), a 100-megapixel PNG and an animated GIF (those two are tagged)."""
    folder = tmp_path_factory.mktemp("bad_uploads")
    broken = sample_photos["broken"]
    files = {name: os.path.join(broken, name)
             for name in ("text.jpg", "truncated.jpg", "empty.png")}
    photo = Image.open(sample_photos["in_folder"][1]).convert("RGB")
    huge = Image.new("RGB", (10_000, 10_000), (40, 120, 200))
    huge.paste(photo.resize((3000, 3000)), (3500, 3500))
    files["huge.png"] = str(folder / "huge.png")
    huge.save(files["huge.png"], compress_level=1)
    del huge
    files["animated.gif"] = str(folder / "animated.gif")
    photo.convert("P").save(files["animated.gif"], save_all=True, duration=100, loop=0,
                            append_images=[Image.new("P", photo.size, 3)])
    return files


def gallery(*paths):
    """The page's photo input, as Gradio's client sends it."""
    from gradio_client import handle_file
    return [{"image": handle_file(path), "caption": None} for path in paths]


def client_of(server):
    from gradio_client import Client
    return Client(server["url"], verbose=False)


def memory_kb(process, field):
    """VmRSS (now) or VmHWM (peak) of a running process, in kB."""
    with open(f"/proc/{process.pid}/status", encoding="utf-8") as stream:
        return int(next(line.split()[1] for line in stream if line.startswith(field + ":")))


def expected_by_name(predicted_json, paths):
    rows = {row["path"]: row for row in predicted_json}
    return {os.path.basename(path): rows[path] for path in paths}


def assert_same_as_predict(answer, expected, top_k):
    """The page's results (the JSON output) are predict.py's top_k tags and scores (1e-5)."""
    assert [result["name"] for result in answer] == list(expected)
    for result in answer:
        row = expected[result["name"]]
        assert result["tags"] == row["tags"][:top_k], result["name"]
        np.testing.assert_allclose(result["scores"], row["scores"][:top_k], atol=1e-5)


# ---------------------------------------------------------------------------- the server

def test_the_server_listens_on_loopback_only(server):
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as stream:
            for line in stream.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.rsplit(":", 1)
                if state == "0A" and int(port, 16) == server["port"]:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, and no IPv6 socket


def test_arguments_are_refused_with_a_one_line_error():
    """(A bad --model is predict.py's one-line error, tests/test_predict.py: the same
    open_tagger and cli.run.)"""
    result = run_script("app.py", "photo.jpg", fresh=True)  # stderr exactly as users see it
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("app.py: error: unexpected arguments photo.jpg: photos are "
                                     "given on the page (to tag files from the command line, "
                                     "use predict.py)")


# ---------------------------------------------------------------------------- the API

def test_a_client_in_another_process_gets_predict_answers(server, sample_photos,
                                                          predicted_json):
    """The page's function through Gradio's client: the tags and scores of predict.py (its
    --top_k, then its --threshold), the copy-ready lines, the HTML cards."""
    client = client_of(server)
    photos = sample_photos["in_folder"]  # JPEG, PNG and WebP
    expected = expected_by_name(predicted_json, photos)
    cards, lines, answer = client.predict(gallery(*photos), 3, 0.0, api_name="/tag")
    assert_same_as_predict(answer, expected, 3)
    assert lines.splitlines() == [" ".join(f"#{tag}" for tag in row["tags"][:3])
                                  for row in expected.values()]
    assert cards.count("<section class='photo'") == len(photos)
    first = expected[os.path.basename(photos[0])]
    threshold = (first["scores"][1] + first["scores"][2]) / 2  # exactly two tags pass
    _, lines, answer = client.predict(gallery(photos[0]), 10, threshold, api_name="/tag")
    assert answer[0]["tags"] == first["tags"][:2] and len(lines.split()) == 2


def test_bad_files_get_predict_messages_and_the_server_goes_on(server, trained_dir, bad_files,
                                                               sample_photos, predicted_json,
                                                               tmp_path):
    """Not an image, a JPEG cut short, an empty upload: each its own message, predict.py's.
    A 100-megapixel PNG and an animated GIF (first frame, with a note): predict.py's tags.
    An upload over 64 MB is refused. The server goes on."""
    result = run_script("predict.py", f"--model={trained_dir}", "--format=json",
                        "--top_k=5", *bad_files.values())
    assert result.returncode == 1, result.stderr[-3000:]
    from_predict = {os.path.basename(row["path"]): row
                    for row in map(json.loads, result.stdout.splitlines())}
    errors = dict(line.split(": error: ", 1) for line in result.stderr.splitlines()
                  if ": error: " in line)
    client = client_of(server)
    good = sample_photos["in_folder"][0]
    _, _, answer = client.predict(gallery(*bad_files.values(), good), 5, 0.0, api_name="/tag")
    by_name = {result["name"]: result for result in answer}
    assert list(by_name) == [*bad_files, os.path.basename(good)]
    for name, path in bad_files.items():
        if path in errors:
            assert by_name[name] == {"name": name, "error": errors[path]}
        else:
            assert by_name[name]["tags"] == from_predict[name]["tags"], name
            np.testing.assert_allclose(by_name[name]["scores"], from_predict[name]["scores"],
                                       atol=1e-5)
    assert sorted(errors) == sorted(bad_files[name] for name in
                                    ("text.jpg", "truncated.jpg", "empty.png"))
    assert by_name["animated.gif"]["note"] == "animated (2 frames): its first frame is tagged"
    assert_same_as_predict(answer[-1:], expected_by_name(predicted_json, [good]), 5)
    # Past predict.py's 64 MB: the page and Gradio's client refuse it before sending; a client
    # that sends it anyway is refused by the server as it arrives.
    too_large = tmp_path / "too_large.jpg"
    with open(too_large, "wb") as stream:
        stream.truncate(64 * 2**20 + 1)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 67108864 bytes"):
        client.predict(gallery(str(too_large)), 5, 0.0, api_name="/tag")
    import httpx  # Gradio's own HTTP client
    with open(too_large, "rb") as stream:
        response = httpx.post(f"{server['url']}gradio_api/upload", timeout=300,
                              files={"files": ("too_large.jpg", stream)})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    assert server["process"].poll() is None


def test_twenty_concurrent_requests_are_answered_in_bounded_memory(server, bad_files,
                                                                   sample_photos,
                                                                   predicted_json):
    """20 requests at once on loopback, three of them the 100-megapixel PNG: every one answered
    with predict.py's tags; photo sets are scored one at a time, so the server's peak memory
    grows by no more than one such photo costs alone; the model was loaded once."""
    client = client_of(server)
    huge, photo = bad_files["huge.png"], sample_photos["in_folder"][1]
    client.predict(gallery(huge), 5, 0.0, api_name="/tag")
    peak_alone = memory_kb(server["process"], "VmHWM")
    jobs = [client.submit(gallery(huge if index % 7 == 0 else photo), 5, 0.0, api_name="/tag")
            for index in range(20)]
    answers = [job.result(timeout=600)[2] for job in jobs]
    expected = expected_by_name(predicted_json, [photo])
    huge_answer = answers[0]
    for index, answer in enumerate(answers):
        if index % 7 == 0:
            assert answer == huge_answer
        else:
            assert_same_as_predict(answer, expected, 5)
    growth_mb = (memory_kb(server["process"], "VmHWM") - peak_alone) / 1024
    print(f"\nserver memory: peak {peak_alone / 1024:.0f} MB after one 100-MP PNG alone, "
          f"+{growth_mb:.0f} MB for 20 concurrent requests (3 of them that PNG)")
    assert growth_mb < 200
    log = server["log"].read_text(encoding="utf-8")
    assert log.count(": using model.ckpt-") == 1, log[-3000:]


# ---------------------------------------------------------------------------- in a browser

@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium driven by Selenium (the system's chromium and chromedriver)."""
    if not CHROMIUM or not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip("headless Chromium is not installed: apt-get install chromium "
                    "chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: no lookup of drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def shown_cards(driver):
    """{photo name: (tags, scores, error)} as the page's DOM shows them."""
    from selenium.webdriver.common.by import By
    cards = {}
    for card in driver.find_elements(By.CSS_SELECTOR, "#results section.photo"):
        bars = card.find_elements(By.CSS_SELECTOR, ".tag")
        errors = card.find_elements(By.CSS_SELECTOR, ".photo-error")
        cards[card.get_attribute("data-name")] = (
            [bar.get_attribute("data-tag") for bar in bars],
            [float(bar.get_attribute("data-score")) for bar in bars],
            errors[0].text if errors else None)
    return cards


def test_a_browser_uploads_photos_and_reads_predict_tags_on_the_page(
        server, browser, trained_dir, sample_photos, bad_files, predicted_json, tmp_path):
    """The page in Chromium: the model line; two photos and three bad files picked at once; the
    cards' tags and scores are predict.py's (top 5, the default), the bad files' messages are
    shown; the top-k control then shows fewer tags. A screenshot is kept."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    photos = sample_photos["in_folder"][:2]
    bad = [bad_files[name] for name in ("text.jpg", "truncated.jpg", "empty.png")]
    browser.get(server["url"])
    # The cards are replaced while the page renders them: an element read then is stale.
    wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))
    picker = wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR,
                                                           "#photos input[type=file]"))
    model = browser.find_element(By.CSS_SELECTOR, "#model").text
    assert f"model: {os.path.normpath(trained_dir)} (model.ckpt-" in model
    assert "variant: raw weights, 75 px, one view" in model and "val: " in model
    picker.send_keys("\n".join(photos + bad))
    wait.until(lambda driver: len(shown_cards(driver)) == len(photos) + len(bad))
    shown = shown_cards(browser)
    for name, row in expected_by_name(predicted_json, photos).items():
        tags, scores, error = shown[name]
        assert tags == row["tags"][:5] and error is None
        np.testing.assert_allclose(scores, row["scores"][:5], atol=1e-5)
    for path in bad:
        assert shown[os.path.basename(path)][2], path  # its message, in the card
    assert "not an image" in shown["text.jpg"][2] and "empty" in shown["empty.png"][2]
    lines = browser.find_element(By.CSS_SELECTOR, "#hashtags textarea").get_attribute("value")
    assert lines.splitlines() == [" ".join(f"#{tag}" for tag in shown[os.path.basename(path)][0])
                                  for path in photos]
    screenshot = tmp_path / "app.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot: {screenshot}")
    assert Image.open(screenshot).size[0] >= 1000
    top_k = browser.find_element(By.CSS_SELECTOR, "#top_k input[type=number]")
    top_k.send_keys(Keys.CONTROL, "a")
    top_k.send_keys("2", Keys.ENTER)
    wait.until(lambda driver: all(len(tags) == 2 for tags, _, error in
                                  shown_cards(driver).values() if error is None))
