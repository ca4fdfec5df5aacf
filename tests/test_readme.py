"""The README's embedding example runs as written: a user copying it gets a working program."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_embedding_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Embedding"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CAMPAIGN_ENGINE_DB", None)
    result = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'total': 1" in result.stdout  # the forecast it prints: one email today
    assert (tmp_path / "campaigns.db").exists()
