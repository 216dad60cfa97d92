"""The page's static files ship in the package and load nothing from elsewhere (it works offline)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from server.routes_ui import ASSETS, STATIC

ROOT = Path(__file__).resolve().parents[2]


def test_every_static_file_is_package_data_and_served() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["server"]
    files = sorted(p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir() if p.is_file())
    assert "static/index.html" in files
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f"{f} would be left out of the wheel"
    assert {f"static/{name}" for name in ASSETS} | {"static/index.html"} == set(files)


def test_the_page_references_only_its_own_files() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith(("/", "#", "data:")) and not r.startswith("//") for r in refs), refs
    for name in ASSETS:
        assert f"/ui/{name}" in html
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|//cdn|@import|url\(", text), name
