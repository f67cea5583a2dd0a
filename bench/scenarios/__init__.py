"""The texts' "what happens if..." experiments, runnable: ``python -m bench.scenarios``.

Each scenario starts the servers and clients it needs on loopback, does what
the text describes, and sets what happened beside what the text predicts
(see ``harness`` for the machinery and ``observe`` for what is read from
/proc).  They are grouped in modules by the text they come from (the quick
guide's in ``guide``, ``guide_io`` and ``guide_servers``, the worksheet's in
``worksheet`` and ``worksheet_changes``, UNP's in ``unp`` and ``netns``,
CS:APP's, Comer's), and run in the order of docs/tutorial.md (``ORDER``
below).  ``texts``, ``texts_guide``, ``texts_worksheet`` and ``texts_unp``
hold the texts' own flawed programs, for the scenarios whose point is the
flaw.
"""

from bench.scenarios.harness import REGISTRY, find
# Importing them registers them, in this order: the order of the texts.
from bench.scenarios import (guide, guide_io, guide_servers, worksheet, worksheet_changes, unp,
                             netns, csapp, comer)

# The order of `list` and `run --all`: README's table and docs/tutorial.md's walk through the
# texts (the quick guide, task by task, with CS:APP's SIGPIPE at its 8th task; the worksheet;
# UNP ch. 5; Comer), by each scenario's first id.
ORDER = [
    "x11", "x12", "x18", "x10", "x9", "x13", "x15", "x14", "x16", "x25",
    "e1", "e3", "x22", "e4", "x24", "x17", "e10", "e11", "e13", "e14",
    "x1", "x2", "x3", "x4", "x21", "x5", "x6", "x7", "x8",
    "x19", "x20", "select-1024",
]
_unordered = dict(REGISTRY)
REGISTRY.clear()
REGISTRY.update((key, _unordered.pop(key)) for key in ORDER if key in _unordered)
REGISTRY.update(_unordered)     # none, once ORDER is complete (a test checks)

__all__ = ["REGISTRY", "find", "guide", "guide_io", "guide_servers", "worksheet",
           "worksheet_changes", "unp", "netns", "csapp", "comer"]
