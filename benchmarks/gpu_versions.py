"""Step `versions` of benchmarks/gpu_run.sh: the machine and software a GPU run's figures belong to, into a JSON
file (torch, CUDA, cuDNN, the GPU, Python, the packages stemlab runs on), and a check that every package stemlab
imports is importable (the GPU image lacks some: they travel as wheels, see ../shared/gpu/fetch-wheels.sh).

    python benchmarks/gpu_versions.py OUT.json"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# distribution -> module, for every third-party package a run, a profile, the shapes and the report import
NEEDED = {"torch": "torch", "torchvision": "torchvision", "fastai": "fastai", "hydra-core": "hydra",
          "omegaconf": "omegaconf", "hydra-joblib-launcher": "hydra_plugins.hydra_joblib_launcher",
          "pandas": "pandas", "numpy": "numpy", "scipy": "scipy", "statsmodels": "statsmodels",
          "scikit-learn": "sklearn", "matplotlib": "matplotlib", "adjustText": "adjustText", "tabulate": "tabulate",
          "platformdirs": "platformdirs", "mlxtend": "mlxtend", "rich": "rich", "tqdm": "tqdm", "pillow": "PIL"}


def command_output(*cmd: str) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    done = subprocess.run(cmd, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def main() -> int:
    out = Path(sys.argv[1])
    missing = []
    for module in NEEDED.values():
        try:
            import_module(module)
        except ImportError:
            missing.append(module)
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "nvidia_smi": command_output("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                     "power.limit", "--format=csv,noheader"),
        "commit": command_output("git", "rev-parse", "--short", "HEAD"),
        "packages": {},
        "missing": missing,
    }
    for dist in NEEDED:
        try:
            info["packages"][dist] = version(dist)
        except PackageNotFoundError:
            info["packages"][dist] = None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    if missing:
        print(f"missing Python packages: {', '.join(missing)}; fetch their wheels with ../shared/gpu/fetch-wheels.sh "
              "DIR NAME==VERSION and carry DIR.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
