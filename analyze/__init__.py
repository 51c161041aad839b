"""What is measured and compared: the per-layer cost profile (`analyze.profile`) and, later,
sweep comparison (`analyze report`).

Kept light on purpose: importing `analyze` pulls in nothing heavy; import the submodules you need
(`from analyze.profile import profile_model`).
"""
