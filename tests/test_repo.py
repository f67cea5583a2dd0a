"""The project's front door: README's commands are the ones that run (tier 1)."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ci_commands():
    """.ci/run's lines that do something, stripped (no comments, no blank lines)."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command_in_a_venv_of_its_own_on_each_python():
    """What CI runs is what a newcomer copies from README, so README's test command is known to
    work: in a venv made and activated just before it, as README's set-up does, once for each
    Python that setup.cfg says the project runs on (3.11 to 3.13)."""
    import re

    commands = ci_commands()
    tests = [line for line in commands if "pytest" in line]
    assert len(tests) == 1, tests
    test = tests[0]
    assert f"\n{test}\n" in (ROOT / "README.md").read_text()
    made, activated = commands[commands.index(test) - 2:commands.index(test)]
    assert " -m venv " in made and activated.startswith(". ") and "/bin/activate" in activated
    versions = re.search(r"^versions=\((.*)\)$", "\n".join(commands), re.M)[1].split()
    declared = re.findall(r"Python :: (3\.\d+)$", (ROOT / "setup.cfg").read_text(), re.M)
    assert versions == declared == ["3.11", "3.12", "3.13"]


def test_the_code_passes_the_pinned_linter():
    """`ruff check`, at the version setup.cfg pins and with pyproject.toml's rules, finds
    nothing in the checkout: no unused import, undefined name or misused logging call gets
    in, on any of the Pythons CI runs (the suite runs it, so its summary line is CI's last)."""
    import re
    import subprocess
    import sys

    import pytest

    pinned = re.search(r"^\s*ruff==(\S+)$", (ROOT / "setup.cfg").read_text(), re.M)[1]
    found = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True,
                           text=True)
    if found.returncode != 0:
        pytest.skip(f"ruff is not installed here (python -m pip install -e '.[test]' "
                    f"installs ruff {pinned})")
    if found.stdout.split() != ["ruff", pinned]:
        pytest.skip(f"{found.stdout.strip()} is installed, setup.cfg pins {pinned}: its "
                    f"findings could differ")
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_readme_starts_the_echo_server_with_the_module_that_exists():
    """README's first command names a module that is really there."""
    assert "\npython -m servers.echo_select\n" in (ROOT / "README.md").read_text()
    assert (ROOT / "servers" / "echo_select.py").is_file()


def test_the_library_example_runs_as_pasted(tmp_path):
    """docs/library.md's complete server, pasted into a file as the page says, serves: the
    greeting, lines in capitals, 'bye' closes, Ctrl-C stops it and prints its counters."""
    import re
    import signal
    import socket
    import subprocess
    import sys

    from conftest import DEADLINE, LISTENING, readline_within, recv_all

    text = (ROOT / "docs" / "library.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)[1]
    (tmp_path / "shout.py").write_text(code)
    proc = subprocess.Popen([sys.executable, "shout.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        port = int(LISTENING.match(readline_within(proc.stdout).rstrip())["port"])
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
            c.sendall(b"hello\r\nbye\n")
            assert recv_all(c) == b"say something\nHELLO\nBYE\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
    assert proc.returncode == 0, err
    assert "'accepted': 1" in out.decode() and "'closed': 1" in out.decode()
    assert b"Traceback" not in err
