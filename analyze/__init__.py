"""The top layer: commands over models and finished runs (`python -m analyze COMMAND`): the comparison of a sweep's
runs (`analyze.report`), layer-shape studies (`analyze.shapes`), evaluation and export of a run, the dashboard, and
the `profile` command over the cost profiler (`profiler`, a layer below).

Kept light on purpose: importing `analyze` pulls in nothing heavy; import the submodules you need.
"""
