"""Sub-commands of the ``actionpp`` CLI: each module defines ``register(subparsers)``.

A registered parser sets ``func`` (via ``set_defaults``) to a callable taking the
parsed ``argparse.Namespace`` and returning an exit code. Imports of heavy modules
(torch, matplotlib) happen inside ``func``, so ``actionpp --help`` stays fast.
"""
