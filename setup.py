"""Only the package list lives here; everything else is in pyproject.toml.

pyproject.toml can either list packages or find them, not both: kvmlab's packages are found (a new role
package under kvmlab/roles/ needs no entry), the two folders renamed in [tool.setuptools.package-dir] are added.
"""

from setuptools import find_namespace_packages, setup

DATA = ("kvmlab.templates", "kvmlab.labs", "kvmlab.exercises")  # folders of data, shipped under these names

setup(
    packages=[
        *find_namespace_packages(include=["kvmlab", "kvmlab.*"], exclude=["*.__pycache__", *DATA, *(f"{d}.*" for d in DATA)]),
        "kvmlab_fixtures",
        *DATA,
    ]
)
