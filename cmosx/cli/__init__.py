"""The command-line interface: the only layer that prints or exits.

One module per command or command group; :mod:`cmosx.cli.main` assembles them.
Modules here must not import torch at import time (``cmosx --help`` stays fast).
"""
