"""docs/ builds with `mkdocs build --strict`, and the build fails on what it is there to catch.

mkdocs.yml turns a link to a missing page, a missing anchor and a page left
out of the nav into warnings, and --strict turns warnings into a failed
build. The README is not part of the site, so its links into docs/ are
checked here against the anchors of the built pages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).parent / "mkdocs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of `project`'s mkdocs.yml into `site`, with its output."""
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The project's docs, built once for this module."""
    site = tmp_path_factory.mktemp("docs") / "site"
    result = build(PROJECT, site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return site


def test_the_docs_build_strictly_with_every_page(site):
    pages = sorted(path.stem for path in (PROJECT / "docs").glob("*.md"))
    assert "settings" in pages and "endpoints" in pages
    for page in pages:
        built = site / "index.html" if page == "index" else site / page / "index.html"
        assert built.is_file(), f"docs/{page}.md was not built"


@pytest.mark.parametrize(
    ("page", "addition", "named"),
    [
        ("layout.md", "\nSee [nowhere](endpoints.md#no-such-anchor).\n", "no-such-anchor"),
        ("layout.md", "\nSee [a page](no-such-page.md).\n", "no-such-page.md"),
        ("left-out.md", "# A page the nav leaves out\n", "left-out.md"),
    ],
    ids=["a missing anchor", "a missing page", "a page not in the nav"],
)
def test_a_broken_docs_tree_fails_the_build(tmp_path, page, addition, named):
    shutil.copy(PROJECT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(PROJECT / "docs", tmp_path / "docs")
    target = tmp_path / "docs" / page
    target.write_text((target.read_text() if target.exists() else "") + addition)
    result = build(tmp_path, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the build passed with {named}:\n{output}"
    assert named in output, output


def test_the_readme_maps_every_page_and_its_links_into_docs_land(site):
    links = LINK.findall((PROJECT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    for link in local:
        path, _hash, anchor = link.partition("#")
        assert (PROJECT / path).is_file(), f"README.md links to {link}, which does not exist"
        if anchor and path.startswith("docs/"):
            page = Path(path).relative_to("docs").with_suffix("")
            html = (site / ("" if page.name == "index" else page) / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"README.md links to {link}: no such anchor on that page"
    mapped = {link.partition("#")[0] for link in local}
    unmapped = [f"docs/{page.name}" for page in (PROJECT / "docs").glob("*.md") if f"docs/{page.name}" not in mapped]
    assert unmapped == ["docs/index.md"], f"the README's map of the docs leaves out {unmapped}"
