"""The ``bubbles`` command: the layer on top of every package.

Commands parse arguments, call the libraries (:mod:`bubbles`, :mod:`analysis`,
:mod:`experiments`, :mod:`ann_bridge`) and write their results; they compute nothing
of their own. No library imports this package. Each subcommand's module is imported
only when it runs (:mod:`commands.main`), so ``bubbles analyze`` works without psychopy
or torch installed.
"""
