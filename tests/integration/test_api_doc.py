"""docs/api.md: its example runs as written and prints what the page says."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs/api.md"
pytestmark = pytest.mark.integration


def test_api_doc_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("accuracy ")
    assert "'majority'" in out[1] and "'fine_tuned'" in out[1]
    assert out[2].split()[0] in ("positive", "negative") and out[3].split()[0] in ("positive", "negative")
    assert "train -> epocs: unknown key. Did you mean 'epochs'?" in out[4]
    assert (tmp_path / "runs/api_demo/adapter/adapter_config.json").is_file()
    import yaml

    assert yaml.safe_load((tmp_path / "runs/api_demo/config.resolved.yaml").read_text())["train"]["seed"] == 7
