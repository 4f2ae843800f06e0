"""The engine behind ``qgate check``: shared scoring passes, generations, reference outputs.

Private to qgate: checks reach it only through :class:`qgate.check.CheckContext`, so it can
change without breaking a plugin.
"""
