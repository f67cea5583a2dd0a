"""UNP ch. 5's host crash and lost connectivity, in a network namespace of the scenario's own."""

from bench.scenarios.harness import scenario  # noqa: F401 (scenarios to come)
