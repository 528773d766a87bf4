"""The documentation site (mkdocs.yml): every public name has a docstring and its entry on the
API reference pages, the navigation lists every page, the changelog is the CHANGELOG.

The docstrings are read as mkdocstrings reads them (griffe, statically: a constant's docstring
is the string literal after it). The API pages are checked in a real build (``mkdocs build``
into a temporary directory; ``--strict`` is .ci/docs' job, where pages other engineers are
still writing must exist). Without the ``docs`` extra these tests skip, unless
KEEPALIVE_REQUIRE_DOCS=1 (as in .ci/docs), where a missing package fails them.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API = DOCS / "api"
REQUIRE_ENV = "KEEPALIVE_REQUIRE_DOCS"

# One worker runs the whole module (pytest-xdist, --dist loadgroup): the site is built once per
# run, not once per worker that happens to draw one of its tests (about 10 s of CPU a build).
pytestmark = pytest.mark.xdist_group("docs-site")

#: module -> its API reference page (docs/api/...).
DOCUMENTED_MODULES: dict[str, str] = {
    "keepalive": "keepalive.md",
    "keepalive.sync": "sync.md",
    "keepalive.aio": "aio.md",
    "keepalive.reconnect": "reconnect.md",
    "keepalive.installer": "installer.md",
    "keepalive.framing": "framing.md",
    "keepalive.integrations": "integrations.md",
    "keepalive.integrations.asyncpg": "integrations.md",
    "keepalive.integrations.elasticsearch": "integrations.md",
    "keepalive.integrations.grpc": "integrations.md",
    "keepalive.integrations.httpx": "integrations.md",
    "keepalive.integrations.kafka": "integrations.md",
    "keepalive.integrations.kombu": "integrations.md",
    "keepalive.integrations.paramiko": "integrations.md",
    "keepalive.integrations.pika": "integrations.md",
    "keepalive.integrations.websockets": "integrations.md",
    "keepalive.testing": "testing.md",
    "keepalive.trio": "trio.md",
}
#: Public names without a docstring of their own: a string has none (mentioned on the page).
NO_DOCSTRING = frozenset({"keepalive.__version__"})
#: Public names whose docstring is still to be written, in files of other owners (listed in
#: the docs site's report). The test fails for any other undocumented name, and for a name
#: here that has a docstring now: remove it then.
PENDING_DOCSTRINGS: dict[str, str] = {}


def _require(module: str) -> Any:
    """Import a docs-extra package, or skip (fail under KEEPALIVE_REQUIRE_DOCS=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {module} is not installed: pip install -e '.[docs]'")
        pytest.skip(f"{module} is not installed (the docs extra: pip install -e '.[docs]')")


def _public_names() -> list[tuple[str, str]]:
    names = []
    for module in DOCUMENTED_MODULES:
        exported = importlib.import_module(module).__all__
        names += [(module, name) for name in exported]
    return names


def test_every_documented_module_declares_its_public_names() -> None:
    for module in DOCUMENTED_MODULES:
        exported = getattr(importlib.import_module(module), "__all__", None)
        assert exported, f"{module} has no __all__: the API reference would list nothing"


def test_every_integrations_submodule_is_documented() -> None:
    """A new keepalive/integrations/<library>.py gets its section on the API page."""
    package = ROOT / "keepalive" / "integrations"
    modules = {
        f"keepalive.integrations.{path.stem}"
        for path in package.glob("*.py")
        if not path.stem.startswith("_")
    }
    assert modules <= set(DOCUMENTED_MODULES), sorted(modules - set(DOCUMENTED_MODULES))


def test_every_public_name_has_a_docstring() -> None:
    griffe = _require("griffe")
    package = griffe.load(
        "keepalive", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False
    )
    undocumented, documented_now = [], []
    for module, name in _public_names():
        qualified = f"{module}.{name}"
        if qualified in NO_DOCSTRING:
            continue
        owner = package if module == "keepalive" else package[module.removeprefix("keepalive.")]
        member = owner[name]  # follows re-exports to the definition
        docstring = member.docstring.value.strip() if member.docstring else ""
        if docstring and qualified in PENDING_DOCSTRINGS:
            documented_now.append(qualified)
        elif not docstring and qualified not in PENDING_DOCSTRINGS:
            undocumented.append(f"{qualified} ({member.kind.value} in {member.filepath})")
    assert not undocumented, "public names without a docstring:\n" + "\n".join(undocumented)
    assert not documented_now, f"documented now, remove from PENDING_DOCSTRINGS: {documented_now}"


def test_every_public_module_has_a_page_in_the_navigation() -> None:
    yaml = _require("yaml")
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_loader(yaml))

    def pages(items: Any) -> list[str]:
        found: list[str] = []
        for item in items:
            if isinstance(item, str):
                found.append(item)
            elif isinstance(item, dict):
                for value in item.values():
                    found += pages(value) if isinstance(value, list) else [value]
        return found

    listed = set(pages(config["nav"]))
    for module, page in DOCUMENTED_MODULES.items():
        assert f"api/{page}" in listed, f"{module}'s page api/{page} is not in mkdocs.yml's nav"
        assert f"::: {module}\n" in (API / page).read_text(encoding="utf-8"), (module, page)
    on_disk = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert on_disk <= listed, f"pages missing from the nav: {sorted(on_disk - listed)}"
    assert "changelog.md" in listed


def _loader(yaml: Any) -> Any:
    """A safe loader that ignores mkdocs' ``!!python/name:`` and ``!ENV`` tags."""

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return Loader


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("mkdocs")
    _require("mkdocstrings_handlers.python")
    _require("material")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.slow
def test_every_public_name_is_on_its_api_page(site: Path) -> None:
    missing = []
    for module, name in _public_names():
        if f"{module}.{name}" in NO_DOCSTRING:
            continue
        page = site / "api" / DOCUMENTED_MODULES[module].removesuffix(".md") / "index.html"
        if f'id="{module}.{name}"' not in page.read_text(encoding="utf-8"):
            missing.append(f"{module}.{name} (api/{DOCUMENTED_MODULES[module]})")
    assert not missing, "public names missing from the API reference:\n" + "\n".join(missing)


@pytest.mark.slow
def test_api_pages_list_no_private_name(site: Path) -> None:
    for module, page in DOCUMENTED_MODULES.items():
        text = (site / "api" / page.removesuffix(".md") / "index.html").read_text(encoding="utf-8")
        exported = set(importlib.import_module(module).__all__)
        top_level = set(re.findall(rf'id="{re.escape(module)}\.(\w+)"', text))
        # the integrations page also holds its submodules' sections
        submodules = {m.rsplit(".", 1)[1] for m in DOCUMENTED_MODULES if m.startswith(module + ".")}
        extra = top_level - exported - submodules
        assert not extra, f"{module}: names not in __all__ on its page: {sorted(extra)}"


@pytest.mark.slow
def test_changelog_page_is_the_changelog(site: Path) -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", changelog, re.MULTILINE)
    assert headings
    page = html.unescape((site / "changelog" / "index.html").read_text(encoding="utf-8"))
    text = re.sub(r"<[^>]+>", "", page)
    for heading in headings:
        assert heading.replace("[", "").replace("]", "") in text.replace("[", "").replace("]", "")


@pytest.mark.slow
def test_home_page_shows_the_generated_pictures(site: Path) -> None:
    home = (site / "index.html").read_text(encoding="utf-8")
    for picture in ("images/nat-timeline.svg", "images/layers.svg"):
        assert f'src="{picture}"' in home, picture
        assert (site / picture).stat().st_size > 1000


def test_sphinx_roles_become_inline_code() -> None:
    """docs/api/_rst_roles.py: what mkdocstrings would otherwise show verbatim."""
    _require("griffe")
    spec = importlib.util.spec_from_file_location("_rst_roles", API / "_rst_roles.py")
    assert spec is not None
    assert spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    text = (
        "Give a :class:`KeepaliveConfig`; raises :class:`~keepalive.UnsupportedOption`; "
        ":py:func:`keepalive.sync.monitor`, :meth:`the close <Supervisor.close>`, "
        ":data:`ENV_VAR`. ``literal`` and `x` stay."
    )
    assert roles.plain_roles(text) == (
        "Give a `KeepaliveConfig`; raises `UnsupportedOption`; `keepalive.sync.monitor`, "
        "`the close`, `ENV_VAR`. ``literal`` and `x` stay."
    )


@pytest.mark.slow
def test_api_pages_show_no_sphinx_roles_nor_class_machinery(site: Path) -> None:
    for page in sorted((site / "api").rglob("index.html")):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r":(func|class|mod|meth|attr|data|exc):", text), page
        machinery = re.findall(r'id="keepalive[\w.]*\.(__\w+__)"', text)
        assert not {"__slots__", "__repr__", "__match_args__"} & set(machinery), page
