"""Sphinx configuration of the HTML book.

The source tree is generated (``python -m lib.htmlbook build`` writes ``_build/book_src/``); this
file is passed with ``-c docs/book``. Notebooks arrive already executed, so myst-nb only renders.
"""

import importlib.util

project = "Transformers, from Paper to Kernel"
author = "the paper2kernel authors"
copyright = "the paper2kernel authors, MIT License"

extensions = ["myst_nb"]
# MathJax is served from the book itself when the docs extra's sphinx-mathjax-offline is installed;
# without it, pages load MathJax from its CDN when they are viewed (the build itself is offline).
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")

exclude_patterns = ["**/.ipynb_checkpoints"]

# myst-nb: render the stored outputs, never execute.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = project
html_show_sourcelink = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
