"""The README's Python blocks must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks
    namespace = {"__name__": "readme"}
    for block in blocks:  # in order, sharing one namespace, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert "torch.Size([16, 1, 28, 28])" in capsys.readouterr().out
