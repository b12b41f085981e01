"""``alp bench`` benchmarks: one module each with ``register(subparsers)``, a pure ``run_*`` function over typed
options returning a typed result, and the printing (JSON or text) at its command-line edge.

Helpers without ``register``: :mod:`arguments` (flags derived from the options models), and the
label-savings bench's :mod:`label_savings` (result types and headline arithmetic) and :mod:`strategy_runs`
(its runs, here or in worker processes).
"""
