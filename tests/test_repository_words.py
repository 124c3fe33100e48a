"""The repository speaks of the software only: no words about how its development was organised (nor the names of
the machine kinds it was measured on; the card's own name says which GPU), in any tracked file's text or path
(code, tests, docs, benchmark notes and result folders)."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# assembled from parts so that this file does not match itself
WORDS = re.compile("|".join([r"\bsess" + r"ions?\b", r"\bcall ?[0-9]+\b", r"\bissue[ -]?#?[0-9]+", r"device " + "time",
                             r"\blent " + "card", "nvidia" + r"-h[12]00(-x[0-9])?\b"]), re.IGNORECASE)
TEXT = {".py", ".md", ".sh", ".toml", ".cfg", ".txt", ".json", ".yml", ".yaml", ""}


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.splitlines() if p]


def test_no_process_words_in_paths_or_text():
    hits = []
    for rel in _tracked():
        if WORDS.search(rel):
            hits.append(f"{rel}: path")
        path = ROOT / rel
        if path.suffix not in TEXT or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if WORDS.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, "process words found:\n" + "\n".join(hits[:40])
