"""``alp bench`` benchmarks: one module each, with ``register(subparsers)``. Each prints JSON."""
