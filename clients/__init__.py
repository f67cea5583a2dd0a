"""selectlab clients: blocking clients on the shared framing helpers."""
