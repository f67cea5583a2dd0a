"""The worksheet's suggested changes and error paths: Goodbye, echo, forced errors, and messages split and merged."""

from bench.scenarios.harness import scenario  # noqa: F401 (scenarios to come)
