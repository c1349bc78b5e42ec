"""The page at `/` in a real browser: headless Chromium (Debian's `chromium` and `chromedriver`,
installed by `make system-deps`) driven by Selenium against a real `heed serve` of heed's trained
numbers model (prepared from the committed weights, so that the screenshot shows a real
alignment). A person's steps: type a number, pick the target language, press Translate; the page
must show the API's translation and a heatmap with one cell per (output token, input token),
coloured by weight. The screenshot is kept in artifacts/browser/ for a person to look at."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from export.defaults import prepare
from export.recipes import NUMBERS
from tests.http_server import ROOT, running

ARTIFACTS = ROOT / "artifacts" / "browser"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # a small /dev/shm (containers) must not crash the renderer
    "--window-size=1280,1000",
]
# The heatmap as the page drew it: column and row labels, each cell's weight and colour.
READ_HEATMAP = """
const table = document.getElementById("heatmap");
return {
  columns: [...table.tHead.rows[0].cells].slice(1).map((c) => c.textContent),
  rows: [...table.tBodies[0].rows].map((r) => ({
    token: r.cells[0].textContent,
    weights: [...r.cells].slice(1).map((c) => Number(c.dataset.weight)),
    colours: [...r.cells].slice(1).map((c) => getComputedStyle(c).backgroundColor),
    width: r.cells[1].getBoundingClientRect().width,
  })),
};
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("numbers-repo")
    prepare(repo, names=[NUMBERS.name])
    with running(repo, tmp_path_factory.mktemp("logs") / "browser.log") as s:
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    log = tmp_path_factory.mktemp("logs") / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(log)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_state(driver: webdriver.Chrome, *states: str, timeout: float = 60) -> str:
    """Wait until the form's data-state is one of `states`; returns it."""
    form = driver.find_element(By.ID, "form")
    WebDriverWait(driver, timeout).until(lambda _: form.get_attribute("data-state") in states)
    return form.get_attribute("data-state")


def luminance(css: str) -> float:
    r, g, b = (float(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def translate_in_page(driver: webdriver.Chrome, text: str, language: str) -> None:
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    Select(driver.find_element(By.ID, "lang")).select_by_value(language)
    driver.find_element(By.ID, "translate").click()
    state = wait_state(driver, "done", "error")
    assert state == "done", driver.find_element(By.ID, "status").text


def assert_page_shows(driver: webdriver.Chrome, api: dict) -> None:
    """The page's translation and heatmap are the API's answer for the same request."""
    alignment = api["alignment"]
    assert driver.find_element(By.ID, "translation").text == api["text"].strip()
    drawn = driver.execute_script(READ_HEATMAP)
    assert drawn["columns"] == alignment["source_tokens"]
    assert [r["token"] for r in drawn["rows"]] == alignment["target_tokens"]
    assert [len(r["weights"]) for r in drawn["rows"]] == [len(alignment["source_tokens"])] * api["output_tokens"]
    assert [r["weights"] for r in drawn["rows"]] == alignment["weights"]
    assert all(r["width"] > 0 for r in drawn["rows"])  # rendered, not only in the DOM
    cells = [(w, c) for r in drawn["rows"] for w, c in zip(r["weights"], r["colours"])]
    (low, light), (high, dark) = min(cells), max(cells)
    assert high > low and luminance(dark) < luminance(light)  # a heavier weight is a darker cell


def test_translate_a_number_and_see_its_heatmap(server, browser):
    models = server.client.get("/v1/models").json()
    default = next(m for m in models["models"] if m["name"] == models["defaults"]["translate"])
    browser.get(f"{server.url}/")
    assert wait_state(browser, "ready", "error") == "ready", browser.find_element(By.ID, "status").text
    options = Select(browser.find_element(By.ID, "lang")).options
    assert [o.get_attribute("value") for o in options] == default["languages"]["target"]

    for text, language in [("1234567", "es"), ("three hundred and forty-two thousand five hundred and six", "fr")]:
        translate_in_page(browser, text, language)
        body = {"text": text, "target_lang": language, "return_alignment": True}
        answer = server.client.post("/v1/translate", json=body).json()["translations"][0]
        assert answer["output_tokens"] > 0
        assert_page_shows(browser, answer)  # the second answer replaced the first one's heatmap

    save_screenshot(browser, ARTIFACTS / "translate.png")


def save_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page, below the window's fold too (DevTools' capture), as a PNG."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000


def test_empty_text_is_refused_in_the_page(server, browser):
    browser.get(f"{server.url}/")
    wait_state(browser, "ready")
    browser.find_element(By.ID, "translate").click()
    assert wait_state(browser, "error") == "error"
    assert "Type something" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "result").get_attribute("hidden") is not None


def test_the_apis_error_is_shown_in_the_page(server, browser):
    browser.get(f"{server.url}/")
    wait_state(browser, "ready")
    box = browser.find_element(By.ID, "text")
    box.send_keys("one hundred " * 100)  # over the model's max_input_tokens: the API answers 413
    browser.find_element(By.ID, "translate").click()
    assert wait_state(browser, "error") == "error"
    status = browser.find_element(By.ID, "status").text
    assert "413 input_too_long" in status and "tokens" in status
    assert browser.find_element(By.ID, "translate").is_enabled()  # the person can fix the text and retry


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    """The same model behind an API key: the page itself is open, its API calls are not."""
    repo = tmp_path_factory.mktemp("locked-repo")
    prepare(repo, names=[NUMBERS.name])
    with running(repo, tmp_path_factory.mktemp("logs") / "locked.log", HEED_API_KEYS="page-key") as s:
        yield s


def test_a_server_with_api_keys_asks_for_one_and_the_page_uses_it(locked_server, browser):
    browser.get(f"{locked_server.url}/")
    assert wait_state(browser, "locked", "error") == "locked", browser.find_element(By.ID, "status").text
    key = browser.find_element(By.ID, "key")
    key.send_keys("wrong-key")
    browser.find_element(By.ID, "unlock").click()
    assert wait_state(browser, "locked", "ready") == "locked"
    WebDriverWait(browser, 30).until(lambda d: "refused" in d.find_element(By.ID, "status").text)
    key.send_keys("page-key")
    browser.find_element(By.ID, "unlock").click()
    assert wait_state(browser, "ready", "error") == "ready", browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    translate_in_page(browser, "forty-two", "de")
    assert browser.find_element(By.ID, "translation").text == "zweiundvierzig"
