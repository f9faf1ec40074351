"""Results a person looks at: plots, Markdown/HTML reports, manifests, progress.

Everything here reads finished (or partial) run directories (``metrics.json``,
``accuracy_matrix.csv``, ``routing.json``, ``manifest.json``, ``compare.csv``), so it
works on any results tree, not only on the run that just ended.
"""
