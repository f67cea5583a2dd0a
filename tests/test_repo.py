"""The project's front door: README's commands are the ones that run (tier 1)."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    """What CI runs is what a newcomer copies from README, so README's test command is known to work."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert len(command) == 1
    assert f"\n{command[0]}\n" in (ROOT / "README.md").read_text()


def test_readme_starts_the_echo_server_with_the_module_that_exists():
    """README's first command names a module that is really there."""
    assert "\npython -m servers.echo_select\n" in (ROOT / "README.md").read_text()
    assert (ROOT / "servers" / "echo_select.py").is_file()
