"""End to end in headless Chromium (the system's, driven by Playwright): open every page, launch a
small CGD run from the Run form, follow it to the end and find its result in the leaderboard."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest
from project_fixture import platform_project  # noqa: F401 (fixture)

from cgd_kedro.platform.app import create_app

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background traffic would be refused on a closed
# network; it needs no sandbox as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(platform_project):  # noqa: F811
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(platform_project), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser_page():
    if CHROMIUM is None:
        if os.environ.get("CGD_REQUIRE_BROWSER"):
            pytest.fail(
                "CGD_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)"
            )
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def test_concurrent_requests_all_succeed(server):
    # A browser fetches a page's figures at once, and the server answers them in several threads
    # (Kedro's config loader and pyplot are not safe to use from two threads at once).
    from concurrent.futures import ThreadPoolExecutor
    from urllib.request import urlopen

    urls = [
        "/plots/badnets/samples.png",
        "/plots/badnets/curves.png",
        "/figures/badnets.entropy_map",
        "/experiments/badnets",
    ] * 4
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda url: urlopen(server + url, timeout=120).status, urls))
    assert codes == [200] * len(urls)


def test_pages_then_a_run_whose_result_reaches_the_leaderboard(server, browser_page, tmp_path):
    page = browser_page
    page.goto(server + "/")
    assert "cgd_kedro platform: embedded" in page.locator("h1").inner_text()
    page.click("text=Experiments")
    page.click("#experiments >> text=badnets")
    assert page.locator("h1").inner_text() == "badnets on embedded"
    page.wait_for_load_state("networkidle")  # the figures are drawn on request
    for image in page.locator("img").all():  # entropy map, samples, curves: all loaded and drawn
        assert image.evaluate("i => i.complete && i.naturalWidth > 0"), image.get_attribute("src")
    page.click("text=Leaderboard")
    assert "cgd" not in page.locator("#leaderboard").inner_text()  # not defended yet
    page.click("text=Submit")
    assert page.locator("#architecture option").count() >= 2

    page.click("nav >> text=Run")
    page.select_option("#run", "cgd")
    page.fill("#namespaces", "badnets")
    page.fill("#params", "runtime.seed=0")
    page.click("#launch")
    page.wait_for_url("**/jobs/*")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'succeeded' || "
        "document.getElementById('status').textContent === 'failed'",
        timeout=300_000,
    )
    assert page.locator("#status").inner_text() == "succeeded", page.locator("#log").inner_text()[
        -2000:
    ]
    assert "Completed" in page.locator("#log").inner_text()

    page.click("text=Leaderboard")
    board = page.locator("#leaderboard table")
    rows = [row.inner_text() for row in board.locator("tbody tr").all()]
    assert any("badnets" in row and "\tcgd\t" in row for row in rows), rows
    board.locator("th", has_text="asr").click()  # client-side sort: ascending ASR
    asr_column = [h.inner_text() for h in board.locator("th").all()].index("asr")
    values = [
        float(row.locator("td").nth(asr_column).inner_text())
        for row in board.locator("tbody tr").all()
    ]
    assert values == sorted(values)
    page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000

    # the run defended with MCR too: its experiment page draws MCR along the curve
    page.goto(server + "/experiments/badnets")
    page.wait_for_load_state("networkidle")
    mcr = page.locator("img[alt='mcr']")
    assert mcr.count() == 1 and mcr.evaluate("i => i.complete && i.naturalWidth > 0")
    # the curve is drawn, not dumped into the defense table
    assert "[{" not in page.locator("body").inner_text()
