"""selectlab's reactor: a single-thread event loop on selectors, with explicit state machines.

Modules, one job each:

* ``loop``       -- the event loop (register/modify/unregister, run, timers, signals, stop)
* ``timers``     -- the timer heap the loop sleeps on
* ``states``     -- the listener's and connections' state machines, as tables (sans-IO)
* ``connection`` -- one connection: read, write-now-buffer-the-rest, flow control, endings
* ``listener``   -- accept, admit up to a capacity, reject the rest
* ``server``     -- a listener plus its connections: bookkeeping, logs, graceful stop
* ``errors``     -- the one place that classifies socket errors
* ``protocols``  -- ``LineProtocol``: a protocol of lines, on ``wire.framing``
* ``datagram``   -- a UDP socket on the loop
* ``logwriter``  -- the log handler that never blocks the loop
"""
