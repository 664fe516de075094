# Release notes (tox -e releasenotes): reno collects releasenotes/notes/ from
# the git history; one page for now, the unreleased notes.
project = 'octavia-dsr Release Notes'
copyright = 'octavia-dsr developers'
extensions = ['reno.sphinxext']
root_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
