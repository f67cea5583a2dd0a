"""Console-script entry points for the commands whose modules have none of their own.

Every other command's module has a ``cli_main()`` that setup.cfg names; the
benchmark's two (``python -m bench``, ``python -m bench.scenarios``) are run
as ``__main__`` modules, so their scripts come here, and go through
:func:`cli.run` as ``python -m`` does.  Imported only when a script runs.
"""

import cli


def bench():
    """``selectlab-bench``: ``python -m bench``."""
    from bench.__main__ import main
    cli.run(main)


def bench_scenarios():
    """``selectlab-bench-scenarios``: ``python -m bench.scenarios``."""
    from bench.scenarios.__main__ import main
    cli.run(main)
