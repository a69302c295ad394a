"""Ships the browser modules in the top-level ``widgets/`` folder as ``demon_nb.widgets``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["demon_nb", "demon_nb.*"]) + ["demon_nb.widgets"],
    package_dir={"demon_nb.widgets": "widgets"},
    package_data={"demon_nb.widgets": ["*.js"], "demon_nb": ["models/mini/weights/*"]},
)
