"""Training code, installed as ``cmosx.train``: BSR dataset synthesis, training loops, metrics.

Imports point one way: ``cmosx.train`` may import ``cmosx``; nothing in ``cmosx`` outside this
package imports it (the CLI imports it lazily inside the ``train``/``eval``/``dataset`` commands, except the
torch-free :mod:`cmosx.catalog` its option lists are built from).
"""
