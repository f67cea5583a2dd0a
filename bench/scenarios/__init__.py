"""The texts' "what happens if..." experiments, runnable: ``python -m bench.scenarios``.

Each scenario starts the servers and clients it needs on loopback, does what
the text describes, and sets what happened beside what the text predicts
(see ``harness`` for the machinery and ``observe`` for what is read from
/proc).  They are grouped by the text they come from, in the order of
docs/tutorial.md: the quick guide and the worksheet, UNP ch. 5, CS:APP,
Comer.  ``texts`` holds the texts' own flawed programs, for the scenarios
whose point is the flaw.
"""

from bench.scenarios.harness import REGISTRY, find
# Importing them registers them, in this order: the order of the texts.
from bench.scenarios import (guide, guide_io, guide_servers, worksheet, worksheet_changes, unp,
                             netns, csapp, comer)

__all__ = ["REGISTRY", "find", "guide", "guide_io", "guide_servers", "worksheet",
           "worksheet_changes", "unp", "netns", "csapp", "comer"]
