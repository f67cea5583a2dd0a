"""selectlab servers: the reactor echo server and the designs it is compared with."""
