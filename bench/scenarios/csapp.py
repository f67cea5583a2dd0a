"""CS:APP ch. 11's warning: the second write to a closed connection."""

import signal

from bench.scenarios.harness import scenario


@scenario("X9", "sigpipe", "SIGPIPE on the second write to a connection the client closed",
          "Bryant & O'Hallaron, CS:APP ch. 11, Dealing with prematurely closed connections", """\
"if a server writes to a connection that has already been closed by the client ... then the
first such write returns normally, but the second write causes the delivery of a SIGPIPE signal
whose default behavior is to terminate the process. If the SIGPIPE signal is caught or ignored,
then the second write operation returns -1 with errno set to EPIPE. The strerr and perror
functions report the EPIPE error as a "Broken pipe"".
""")
def sigpipe(r):
    results = {}
    for ignore in (False, True):
        label = "SIGPIPE ignored" if ignore else "SIGPIPE default"
        r.heading(label)
        server = r.server("bench.scenarios.texts", "sigpipe", *(["--ignore"] if ignore else []),
                          "0", label=label, loopback=False)
        client = r.connect(server.address)
        server.wait_for("^SIGPIPE: ")
        r.netstat(server.port, "connected")
        r.ps([server], "connected: the server waits in read")
        client.close()
        r.say("[client] connect(), then close(): the client has left")
        status = server.wait(timeout=5)
        server.flush()
        name = (f"killed by {signal.Signals(-status).name}" if status < 0
                else f"exit status {status}")
        r.say(f"the server process ended: {name}")
        results[ignore] = (status, server.has(r"^first write: returned \d+"),
                           server.has("second write: returned -1, errno EPIPE: Broken pipe"))
    status, first_ok, _ = results[False]
    r.expect(first_ok and status == -signal.SIGPIPE,
             "default action: the first write returns normally, the second kills the process "
             "with SIGPIPE")
    status, first_ok, epipe = results[True]
    r.expect(first_ok and epipe and status == 0,
             "SIGPIPE ignored: the second write returns -1 with errno EPIPE, 'Broken pipe', "
             "and the process carries on")
