"""qgate's built-in reporters: console, JSON, JUnit XML, HTML and Markdown.

Each module is a plugin registered through the ``qgate`` entry-point group, exactly as a third
party's reporter would be.
"""
