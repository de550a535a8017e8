"""Issue 29 items 2-3: the playground page in a real browser. Headless Chromium (Debian's
`chromium` package, driven by selenium through Debian's `chromium-driver`; `.ci/run`
installs both where missing) against the real server and SmolLM2: the page loads, a
majority-vote request renders its tally and candidates, a CNTP request its branch points, a
search its tree, compare mode two strategies side by side, and an invalid option the
server's own error message. Each test writes a screenshot (under pytest's tmp dir, never
committed)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver packages (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1400")
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_script_timeout(600)
    yield driver
    driver.quit()


def open_page(browser: Any, server: Server) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.base_url}/playground")
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.querySelectorAll('#model option').length")
    )


def set_value(browser: Any, selector: str, value: str) -> None:
    browser.execute_script(
        "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('change'));",
        selector,
        value,
    )


def run(browser: Any, side_a: dict[str, str], side_b: dict[str, str] | None = None) -> None:
    """Fill the form, press Run, wait until every shown result is done or failed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    set_value(browser, "#seed", "3")
    set_value(browser, "#max_tokens", "48")
    for side, values in (("a", side_a), ("b", side_b)):
        if values is None:
            continue
        for field, value in values.items():
            set_value(browser, f".side[data-side={side}] .{field}", value)
    if side_b is not None:
        box = browser.find_element(By.ID, "compare")
        if not box.is_selected():
            box.click()
    browser.find_element(By.ID, "run").click()
    sides = ["a", "b"] if side_b is not None else ["a"]
    WebDriverWait(browser, 600).until(
        lambda d: all(
            d.execute_script(
                "const b = document.querySelector(`.result[data-side=${arguments[0]}]`);"
                "return b.dataset.done === 'true' || !b.querySelector('.error').hidden;",
                s,
            )
            for s in sides
        )
    )


def texts(browser: Any, selector: str) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector
    )


def shot(browser: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one


def test_the_page_loads_offline_with_its_security_headers(browser: Any, server: Server) -> None:
    r = httpx.get(f"{server.base_url}/playground")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "http" not in r.text.replace(server.base_url, "")  # nothing fetched from elsewhere
    open_page(browser, server)
    assert browser.title == "Ponder playground"
    models = texts(browser, "#model option")
    assert "smollm2" in models
    strategies = texts(browser, ".side[data-side=a] .strategy option")
    assert {"majority_vote", "cntp", "beam", "verify"} <= set(strategies)
    nav = browser.execute_script(
        "const e = performance.getEntriesByType('navigation')[0]; return e.loadEventEnd;"
    )
    print(f"playground load: {nav:.0f} ms")


def test_majority_vote_renders_tally_and_candidates(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    open_page(browser, server)
    run(browser, {"strategy": "majority_vote", "samples": "4", "options": ""})
    shot(browser, tmp_path, "majority_vote")
    assert texts(browser, ".result[data-side=a] .error") == [""]
    rows = texts(browser, ".result[data-side=a] tbody tr")
    assert len(rows) == 4  # every candidate
    bars = texts(browser, ".result[data-side=a] .tally .bar-row .bar-label")
    answer = texts(browser, ".result[data-side=a] .answer")[0]
    if answer != "(none)":
        assert bars[0] == answer  # the winner's bar first
    votes = texts(browser, ".result[data-side=a] .tally .bar-value")
    assert sum(int(v.split()[0]) for v in votes) <= 4
    first = browser.execute_script(
        "return document.querySelector('.result[data-side=a]').dataset.firstProgressMs"
    )
    print(f"first progress update: {first} ms")
    assert first is not None  # progress was streamed before the answer


def test_cntp_renders_its_branch_points(browser: Any, server: Server, tmp_path: Path) -> None:
    open_page(browser, server)
    options = json.dumps({"entropy_low": -2, "entropy_high": -1, "max_trials": 3})
    run(browser, {"strategy": "cntp", "samples": "1", "options": options})
    shot(browser, tmp_path, "cntp")
    branches = texts(browser, ".result[data-side=a] .branches li")
    assert branches and all("3 trials" in b for b in branches)


def test_a_search_renders_its_tree_and_compare_mode_two_sides(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    open_page(browser, server)
    run(
        browser,
        {
            "strategy": "beam",
            "samples": "4",
            "options": json.dumps({"delimiter": "\n", "max_steps": 3}),
        },
        {"strategy": "self_certainty", "samples": "4", "options": ""},
    )
    shot(browser, tmp_path, "compare")
    assert texts(browser, ".result[data-side=a] .tree .tree-step")
    assert texts(browser, ".result[data-side=a] .strategy-name") == ["beam"]
    assert texts(browser, ".result[data-side=b] .strategy-name") == ["self_certainty"]
    assert len(texts(browser, ".result[data-side=b] tbody tr")) == 4


def test_an_invalid_option_shows_the_servers_message(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    open_page(browser, server)
    run(browser, {"strategy": "rpc", "samples": "4", "options": '{"prune": "sometimes"}'})
    shot(browser, tmp_path, "error")
    shown = texts(browser, ".result[data-side=a] .error")[0]
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "x"}],
        "ponder": {"strategy": "rpc", "samples": 4, "rpc": {"prune": "sometimes"}},
    }
    said = httpx.post(f"{server.base_url}/v1/chat/completions", json=body).json()["error"]
    assert said["message"] in shown and said["param"] in shown
