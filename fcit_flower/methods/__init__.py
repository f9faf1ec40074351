"""The method table: one module per continual-learning method.

Each module registers a :class:`~fcit_flower.methods.base.Method` with
:func:`~fcit_flower.methods.registry.register`; :func:`~fcit_flower.methods.
registry.get_method` finds it by the run-config ``method`` name.
"""
