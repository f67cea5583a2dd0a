"""Every command at its edges, run as a user runs it (tier 4): an output nobody reads or that
is full, console scripts named after their modules, errors that name the command as it was
typed, the pid a server logs, and UDP clients that give up alike."""

import configparser
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import DEADLINE, ROOT
import cli

README = os.path.join(ROOT, "README.md")
NOT_COMMANDS = {"pip", "pytest", "venv", "tools.docgen"}  # tools/ is for developers, not installed


def readme_commands():
    """Every ``python -m MODULE`` README shows that is one of the project's commands."""
    with open(README) as f:
        found = re.findall(r"python3? -m ([a-z_][a-z_.]*[a-z_])", f.read())
    return sorted(set(found) - NOT_COMMANDS)


COMMANDS = readme_commands()


def console_scripts():
    """setup.cfg's console scripts: {name: "module:function"}."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    entries = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in entries)


def run(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, **kwargs):
    return subprocess.run(args, cwd=ROOT, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=DEADLINE, **kwargs)


def into_a_closed_pipe(args, **kwargs):
    """Run ``args`` with stdout a pipe whose reader has already gone (``| head -1`` once head
    has ended, without the race)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run(args, stdout=w, **kwargs)
    finally:
        os.close(w)


def unused_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_lists_every_command():
    """The commands checked below are README's: the servers, the clients and the benchmark."""
    assert len(COMMANDS) == 18, COMMANDS
    assert {"servers.echo_select", "clients.hostinfo", "bench", "bench.scenarios"} <= set(COMMANDS)


def test_every_command_has_a_console_script_named_after_its_module_and_listed_in_readme():
    """After `pip install`, each `python -m MODULE` is also `selectlab-MODULE` (dots and
    underscores as hyphens), one rule for all, and README says so for each."""
    scripts = console_scripts()
    assert sorted(scripts) == sorted(cli.script_name(m) for m in COMMANDS)
    with open(README) as f:
        readme = f.read()
    for module in COMMANDS:
        name = cli.script_name(module)
        target = scripts[name]
        assert target.split(":")[0] in (module, "cli.scripts"), (name, target)
        assert f"`{name}`" in readme, f"README does not list {name}"


def wrapper(tmp_path, name):
    """The script pip writes for console script ``name``, in ``tmp_path``, run with the checkout
    on the path (the installed one may belong to another checkout)."""
    module, function = console_scripts()[name].split(":")
    path = tmp_path / name
    path.write_text(f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    return [sys.executable, str(path)]


@pytest.mark.parametrize("module", COMMANDS)
def test_a_console_script_names_itself_in_its_usage_and_errors(module, tmp_path):
    """Run as `selectlab-...`, a command's usage line and its usage errors name that script,
    not the `python -m` form the user did not type."""
    name = cli.script_name(module)
    env = dict(os.environ, PYTHONPATH=ROOT)
    shown = run(wrapper(tmp_path, name) + ["--help"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().startswith(f"usage: {name} "), shown.stdout[:200]
    wrong = run(wrapper(tmp_path, name) + ["--no-such-option"], env=env)
    assert wrong.returncode == 2
    assert wrong.stderr.decode().startswith(f"{name}: error: "), wrong.stderr


def test_a_console_scripts_own_errors_name_it_too(tmp_path):
    """The errors a command raises itself (a refused connection, an unknown scenario) name the
    script as its usage errors do: one name per command, whichever way it was run."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    refused = run(wrapper(tmp_path, "selectlab-clients-echo") + ["127.0.0.1", "1"], env=env)
    assert refused.returncode == 1
    assert refused.stderr.decode().startswith("selectlab-clients-echo: error: connection refused")
    unknown = run(wrapper(tmp_path, "selectlab-bench-scenarios") + ["run", "X99"], env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.decode().startswith("selectlab-bench-scenarios: error: no scenario")
    assert "`selectlab-bench-scenarios list` shows them" in unknown.stderr.decode(), \
        "its hint names the command as it was run, too"


@pytest.mark.parametrize("module", COMMANDS)
def test_help_into_a_pipe_nobody_reads_ends_quietly(module):
    """`... --help | head -1`: once the reader has gone, the command ends as a Unix tool does
    on SIGPIPE, with no traceback and nothing on stderr, status 141 (128 + SIGPIPE)."""
    proc = into_a_closed_pipe([sys.executable, "-m", module, "--help"])
    assert (proc.returncode, proc.stderr) == (cli.EXIT_BROKEN_PIPE, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("module", COMMANDS)
def test_help_into_a_full_device_is_one_line_and_exit_1(module):
    """`... --help > /dev/full` (a full disk) says so in one line and exits 1, where argparse
    alone would exit 0 having written nothing."""
    with open("/dev/full", "wb") as full:
        proc = run([sys.executable, "-m", module, "--help"], stdout=full)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"python -m {module}: error: cannot write the output: "
                                    f"No space left on device\n")


def test_output_into_a_pipe_nobody_reads_ends_quietly(start_server):
    """`clients.echo < file | head -1`, `clients.msgclient | head -1`, `hostinfo | head -1`,
    `bench.scenarios list | head -1`: no traceback, no message about a server that did
    nothing wrong, status 141."""
    echo = start_server()
    hello = start_server("servers.hello", "--model", "select")
    runs = {
        "clients.echo": into_a_closed_pipe(
            [sys.executable, "-m", "clients.echo", "127.0.0.1", str(echo.port)],
            stdin=open("/etc/services", "rb")),
        "clients.msgclient": into_a_closed_pipe(
            [sys.executable, "-m", "clients.msgclient", "127.0.0.1", str(hello.port)]),
        "clients.hostinfo": into_a_closed_pipe([sys.executable, "-m", "clients.hostinfo"]),
        "bench.scenarios": into_a_closed_pipe(
            [sys.executable, "-m", "bench.scenarios", "list"]),
    }
    assert {name: (p.returncode, p.stderr) for name, p in runs.items()} == {
        name: (cli.EXIT_BROKEN_PIPE, b"") for name in runs}


def test_a_broken_pipe_elsewhere_is_still_an_error_not_a_quiet_exit():
    """Only stdout's reader leaving ends a command quietly: a BrokenPipeError from anything
    else (a socket the command should have handled) is a bug to see, with its traceback."""
    code = ("import cli\n"
            "def main(argv):\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "cli.run(main)\n")
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 1 and b"Traceback" in proc.stderr


def test_both_udp_echo_clients_give_up_alike_on_a_dead_port():
    """Against a port nobody serves, `clients.echo --udp` gives up as `clients.udp_echo` does,
    with the same message after the same 3 tries of 1 s, instead of 3 silent tries of 10 s."""
    port = str(unused_port())
    procs = [subprocess.Popen([sys.executable, "-m", module, *args, "127.0.0.1", port], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for module, args in (("clients.echo", ["--udp"]), ("clients.udp_echo", []))]
    results = [p.communicate(b"Hello!\n", timeout=DEADLINE) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 1 and out == b""
        assert err.decode().endswith(f"error: no answer from 127.0.0.1 port {port} after 3 tries "
                                     f"of 1 s: UDP does not say whether anyone is listening (the "
                                     f"quick guide's answer 1); is the server running?\n"), err


@pytest.mark.parametrize("module, lines", [
    ("servers.echo_select", ["listening on 127.0.0.1:{port}"]),
    ("servers.echo_fork", ["listening on 127.0.0.1:{port}"]),
    ("servers.udp_echo", ["listening on 127.0.0.1:{port} (UDP)"]),
    ("servers.daytime", ["listening on 127.0.0.1:{port}", "listening on 127.0.0.1:{port} (UDP)"]),
], ids=["reactor", "fork", "udp", "tcp-and-udp"])
def test_a_server_logs_the_pid_to_signal_and_stdout_stays_the_listening_lines(
        module, lines, start_server):
    """`kill -USR1 PID` needs the server's pid: its log names it as it starts serving
    (`pid 4242 serving ...`, on stderr), while stdout stays the `listening on` lines that
    scripts read; that pid answers SIGUSR1 with the counters."""
    server = start_server(module)
    pid = server.proc.pid
    expected = [line.format(port=server.port) for line in lines]
    for line in expected:
        server.wait_for_log(f"INFO pid {pid} serving {line.removeprefix('listening on ')}\n")
    server.signal(signal.SIGUSR1)
    server.wait_for_log(" stats: ")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert server.child.stdout.lines() == expected
