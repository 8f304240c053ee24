"""The installed libraries: checked against the project's requirements, recorded in provenance.

The requirements are read from the installed distribution's metadata (pyproject.toml's
``dependencies``), so the bounds live in one place. A library outside them (a transformers
older than the module paths the adapters use, a filelock without the module lmms-eval 0.7.3
imports) is a one-line error before anything runs, not a traceback deep inside a model.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, requires, version

from mmneuron_bench import __version__
from mmneuron_bench.errors import MMNeuronError

DISTRIBUTION = "mmneuron-bench"
# The packages whose versions decide the numbers, recorded in every results file.
RECORDED = ("lmms_eval", "torch", "transformers", "accelerate", "datasets")


def requirement_problems() -> list[str]:
    """One line per installed library outside the range our requirements allow.

    Empty when the project runs from a source tree that was never installed (no metadata).
    """
    from packaging.requirements import Requirement

    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return []
    problems = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra (dev tools) or another platform's requirement
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            problems.append(f"{requirement.name} is not installed; mmneuron-bench needs {text}")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(
                f"{requirement.name} {installed} is installed, but mmneuron-bench needs "
                f"{requirement.name}{requirement.specifier} (bash install.sh installs the "
                "tested versions)"
            )
    return problems


def check_requirements() -> None:
    """Raise a one-line :class:`MMNeuronError` for the first library outside its range."""
    problems = requirement_problems()
    if problems:
        raise MMNeuronError(problems[0])


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide the numbers."""
    found = {"python": platform.python_version(), "mmneuron_bench": __version__}
    for dist in RECORDED:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found
