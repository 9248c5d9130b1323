# A small documentation site, built by the tests with Sphinx's default theme (alabaster): its
# pages carry what real documentation sites do (a sidebar, related links, permalink marks,
# highlighted and line-numbered code).
project = "Tidepool"
author = "lmforge tests"
extensions = []
html_theme = "alabaster"
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
smartquotes = False  # the text as written, so the tests compare it with the sources read by docutils
