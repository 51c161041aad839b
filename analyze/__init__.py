"""What is measured and compared: the per-layer cost profile (`analyze.profile`: FLOPs, bytes, time,
roofline and plots of any `nn.Module`) and the comparison of a sweep's runs (`analyze.report`);
`python -m analyze profile|report` runs them.

Kept light on purpose: importing `analyze` pulls in nothing heavy; import the submodules you need
(`from analyze.profile import profile_model`).
"""
