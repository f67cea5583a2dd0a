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


def readme_setup():
    """The commands of README's set-up section, in order (each line of its ```sh blocks)."""
    import re

    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Set-up.*?(?=^## )", text, re.S | re.M)[0]
    return [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.strip()]


VENV = "python3 -m venv .venv && . .venv/bin/activate"


def test_readme_makes_and_activates_a_venv_before_anything_else():
    """README's set-up works on a stock Debian Python, which has no `python` and refuses pip
    outside a venv: its first command makes a venv with `python3` and activates it, and only
    then do the server and pip run, as `python` (the venv's), ending with CI's test command."""
    commands = readme_setup()
    assert commands[0] == VENV
    assert all(line.startswith("python -m ") for line in commands[1:]), commands
    assert any(" pip install " in line for line in commands[1:])
    ci = [line for line in ci_commands() if "pytest" in line]
    assert commands[-1] == ci[0]


def test_readmes_venv_command_gives_a_python_where_there_was_none(tmp_path):
    """Pasted into a shell that has `python3` but no `python` on its PATH, README's venv line
    leaves `python` on it, the venv's, and that python starts the server's command from the
    checkout (here `--help`: the first command runs for ever)."""
    import os
    import shutil
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    path = os.pathsep.join([str(bin_dir)] + [d for d in ("/usr/bin", "/bin")
                                             if not os.path.exists(os.path.join(d, "python"))])
    assert shutil.which("python", path=path) is None
    venv, server = readme_setup()[:2]
    script = f'{venv} && command -v python && cd "{ROOT}" && {server} --help'
    env = {"PATH": path, "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, usage = proc.stdout.split("\n", 1)
    assert where == str(tmp_path / ".venv" / "bin" / "python")
    assert usage.startswith("usage: python -m servers.echo_select ")


def pasted_commands():
    """Every command a reader pastes from README's "Try it" and from docs/tutorial.md, with
    where it comes from: the ``$ `` lines of their console blocks (continuations joined) and
    the commands quoted in their text."""
    import re

    readme = (ROOT / "README.md").read_text()
    try_it = re.search(r"^## Try it.*?(?=^## )", readme, re.S | re.M)[0]
    found = []
    for where, text in (("README's Try it", try_it),
                        ("docs/tutorial.md", (ROOT / "docs" / "tutorial.md").read_text())):
        for block in re.findall(r"```console\n(.*?)```", text, re.S):
            joined = block.replace("\\\n", " ")
            found += [(where, line[2:]) for line in joined.splitlines() if line.startswith("$ ")]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(where, " ".join(span.split()))
                  for span in re.findall(r"`(python -m [^`]*)`", prose)]
    return found


def test_the_tutorial_and_try_it_leave_the_checkout_as_it_was():
    """A reader works from the repository's root, so a command there that writes a file by a
    relative name (`> copy`, the benchmark's default `bench-results/`) litters the checkout:
    every output goes to a pipe, /dev/null or an absolute path (/tmp)."""
    import re

    commands = pasted_commands()
    assert len(commands) > 20
    for where, command in commands:
        for target in re.findall(r"(?<![0-9&])>>?\s*([^\s|;&)]+)", command):
            assert target.startswith("/"), f"{where}: {command!r} writes {target}"
        if re.search(r"python -m bench(?!\.)", command):
            assert re.search(r"--out /", command), f"{where}: {command!r} writes bench-results/"


def test_log_excerpts_show_each_line_with_its_date_as_servers_print_it():
    """A log excerpt with times shows the date too, in the servers' own format
    (`2026-12-01 20:32:57.287 INFO ...`), so a reader can match it against their terminal;
    `...` stands for the whole stamp where the time does not matter."""
    import re

    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) ")
    for doc in (ROOT / "README.md", ROOT / "docs" / "tutorial.md"):
        for block in re.findall(r"```(?:text|console)\n(.*?)```", doc.read_text(), re.S):
            for line in block.splitlines():
                if re.match(r"^\s*\d\d:\d\d:\d\d", line) or re.match(r"^\d{4}-\d\d-\d\d ", line):
                    assert stamp.match(line), f"{doc.name}: {line!r}"


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
