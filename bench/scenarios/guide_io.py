"""The quick guide's questions on sockets themselves: orderly close, who replies, a port in use, partial reads and writes."""

from bench.scenarios.harness import scenario  # noqa: F401 (scenarios to come)
