"""The quick guide's servers under load and under a bad client: the listen queue, the iterative server's queue, exit(1) on any error."""

from bench.scenarios.harness import scenario  # noqa: F401 (scenarios to come)
