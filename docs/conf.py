# Sphinx configuration of the documentation (tox -e docs): the Markdown
# pages of docs/ through MyST.
project = 'octavia-dsr'
copyright = 'octavia-dsr developers'
extensions = ['myst_parser']
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
# Pages link to files of the source tree (../README.md, ../etc/...), which
# are not documents of this build.
suppress_warnings = ['myst.xref_missing']
myst_heading_anchors = 3
html_theme = 'alabaster'
