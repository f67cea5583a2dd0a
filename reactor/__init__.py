"""selectlab's reactor: a single-thread event loop on selectors, with explicit state machines.

Modules, one job each:

* ``loop``       -- the event loop (register/modify/unregister, run, timers, signals, stop)
* ``timers``     -- the timer heap the loop sleeps on
* ``states``     -- the listener's and connections' state machines, as tables (sans-IO)
* ``connection`` -- one connection: read, write-now-buffer-the-rest, flow control, endings
* ``listener``   -- accept, admit up to a capacity, reject the rest
* ``server``     -- a listener plus its connections: bookkeeping, logs, graceful stop
* ``errors``     -- the one place that classifies socket errors
* ``framing``    -- the line framer (sans-IO)
* ``streamio``   -- UNP's blocking ``writen``/``readn``/``readline`` on that framer
* ``cli``        -- one-line errors and logging for every command
* ``docgen``     -- draws the state tables into ``docs/architecture.md``
"""
