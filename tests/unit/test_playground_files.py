"""Issue 29 item 2: the playground's files ship in the package, reference nothing outside
the server, and only they are served; PONDER_PLAYGROUND=false turns the page off."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from ponder.api import playground
from ponder.api.errors import ApiError
from ponder.config import Settings

pytestmark = pytest.mark.unit


def request(on: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(settings=Settings(playground=on)))
    )


def test_every_file_ships_and_refers_only_to_this_server() -> None:
    for name in playground.FILES:
        text = playground._read(name).decode()
        assert text.strip()
        assert not re.search(r"https?://", text), name  # no CDN, nothing fetched from elsewhere
    html = playground._read("playground.html").decode()
    assert set(re.findall(r'(?:src|href)="([^"]+)"', html)) == {
        "/playground/playground.css",
        "/playground/playground.js",
    }
    js = playground._read("playground.js").decode()
    assert "innerHTML" not in js and "eval(" not in js  # model text is shown as text


def test_only_the_listed_files_are_served() -> None:
    r = playground._serve(request(), "playground.js")  # type: ignore[arg-type]
    assert r.media_type.startswith("text/javascript")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name in ("../config.py", "playground.py", "static", ""):
        with pytest.raises(ApiError) as e:
            playground._serve(request(), name)  # type: ignore[arg-type]
        assert e.value.status == 404


def test_off_is_a_404() -> None:
    with pytest.raises(ApiError) as e:
        playground._serve(request(on=False), "playground.html")  # type: ignore[arg-type]
    assert e.value.status == 404
