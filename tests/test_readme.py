"""The README's Python example runs as written."""

import os
import re

from conftest import ROOT


def test_readme_vm_example_runs():
    with open(os.path.join(ROOT, "README.md")) as file:
        text = file.read()
    section = text[text.index("## Python API: commands in a guest"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "hartvm.VM" in example
    exec(compile(example, "README.md", "exec"), {})
