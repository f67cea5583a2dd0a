"""What a client and a server of selectlab agree on, with no event loop in it.

* ``framing``  -- the line framer (sans-IO), used by the reactor's line
  protocol, the classic servers and the blocking clients alike
* ``streamio`` -- UNP's blocking ``writen``/``readn``/``readline`` on that framer
* ``services`` -- the port numbers and the small services' replies (DAYTIME, TIME)
* ``hello``    -- the worksheet's Hello session (sans-IO), and its ``quit``

Nothing here imports ``reactor.loop`` or ``servers``: a client that imports
this package loads no server code.
"""
