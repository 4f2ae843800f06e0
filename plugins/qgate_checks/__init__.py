"""qgate's built-in checks. Each module is a plugin registered through the ``qgate`` entry points."""
