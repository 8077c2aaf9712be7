"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2, "the README holds exactly two set-up commands"
    assert commands[0].endswith("npsqueeze report")
    test_command = commands[1].split(" && ", 2)[2]  # after the venv is made and activated
    assert test_command.startswith("pip install -e \".[test]\"")
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
