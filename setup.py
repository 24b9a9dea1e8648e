"""Package list for setuptools (everything else is in pyproject.toml).

``sweeps/`` (Hydra configs) is installed as ``harness.conf`` so that the configs travel with
the package; ``harness.sweep.configs.config_dir()`` finds them in either layout.
"""

from setuptools import find_packages, setup

conf_packages = ["harness.conf"] + [
    "harness.conf." + p for p in find_packages(where="sweeps")
]
setup(
    packages=find_packages(include=["harness", "harness.*"]) + conf_packages,
    package_dir={"harness.conf": "sweeps"},
)
