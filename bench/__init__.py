"""selectlab's benchmark: ``python -m bench`` runs the servers side by side (see ``bench.__main__``).

``bench.scenarios`` is the texts' experiments; ``bench.peers`` the other
servers measured (asyncio, uvloop, socketserver, C epoll).
"""
