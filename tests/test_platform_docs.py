"""docs/platforms.md must be what scripts/gen_platforms_doc.py writes from keepalive/platforms/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from keepalive.platforms import catalog

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_platforms_doc.py"
DOC = ROOT / "docs" / "platforms.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_platforms_doc", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_doc_is_fresh(generator: ModuleType) -> None:
    assert DOC.read_text(encoding="utf-8") == generator.render(), (
        "docs/platforms.md is stale: run python scripts/gen_platforms_doc.py"
    )


def test_check_mode_exit_codes(tmp_path: Path) -> None:
    def check(path: Path) -> int:
        command = [sys.executable, str(SCRIPT), "--check", "--output", str(path)]
        return subprocess.run(command, capture_output=True, check=False, cwd=tmp_path).returncode

    assert check(DOC) == 0
    stale = tmp_path / "platforms.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("1..255 probes", "1..256 probes"))
    assert check(stale) == 1
    assert check(tmp_path / "missing.md") == 1


def test_writing_then_checking_round_trips(tmp_path: Path, generator: ModuleType) -> None:
    target = tmp_path / "out" / "platforms.md"
    assert generator.main(["--output", str(target)]) == 0
    assert generator.main(["--check", "--output", str(target)]) == 0


def test_doc_has_a_section_per_variant_and_the_facts_that_matter(generator: ModuleType) -> None:
    text = generator.render()
    for item in catalog.VARIANTS:
        assert f"\n## {item.label}\n" in text
    for fact in (
        "`SIO_KEEPALIVE_VALS` | 0x98000004 | ms",
        "`TCP_KEEPALIVE` | 0x10 | s",
        "`TCP_KEEPIDLE` | 0x1d | s",
        "`TCP_KEEPIDLE` | 0x22 | s",
        "`TCP_KEEPIDLE` | 3 | 1/2 s",
        "1..255 probes",
    ):
        assert fact in text, fact
