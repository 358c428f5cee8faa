"""Build-time metadata: pin torch to the release the compiled parts are built against.

The op library (``fairesi/lib/libfairesi_ops.so``) and the runner (``fairesi/bin/fairesi-infer``)
link against libtorch's C++ ABI, which changes between minor releases: a wheel built against
torch 2.13 fails under torch 2.11 with ``undefined symbol``. Like torchvision, the wheel
therefore requires the torch it was compiled with, ``torch==MAJOR.MINOR.*``, read from the
torch installed in the build environment (the build is not isolated, see the Makefile).

A scikit-build-core dynamic-metadata provider (``[[tool.dynamic-metadata]]`` in
pyproject.toml). It appends one requirement to ``[project].dependencies``; an sdist, which
compiles nothing, gets the open requirement of the ``sdist`` setting instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def torch_pin(torch_version: str, template: str = "torch=={major}.{minor}.*") -> str:
    """The requirement for wheels built against ``torch_version`` (e.g. '2.13.0+cpu')."""
    match = re.match(r"(\d+)\.(\d+)", torch_version)
    if match is None:
        raise ValueError(f"cannot read the torch version {torch_version!r}")
    return template.format(major=match[1], minor=match[2])


class TorchPin:
    """``dependencies`` += the torch the build compiles against (sdist: the open floor)."""

    def __init__(self) -> None:
        self.state = "wheel"

    def build_state(self, build_state: str) -> None:
        self.state = build_state

    def dynamic_wheel(self, settings: Mapping[str, Any]) -> dict[str, bool]:
        return {"dependencies": True}  # a wheel built from the sdist pins its own torch

    def dynamic_metadata(
        self, settings: Mapping[str, Any], project: Mapping[str, Any]
    ) -> dict[str, list[str]]:
        if self.state == "sdist":
            return {"dependencies": [str(settings.get("sdist", "torch"))]}
        try:
            installed = version("torch")
        except PackageNotFoundError:
            raise RuntimeError(
                "fairesi: torch must be installed before building (pip install torch==2.13.0), "
                "and the build must not be isolated (pip install --no-build-isolation .)"
            ) from None
        template = str(settings.get("requirement", "torch=={major}.{minor}.*"))
        return {"dependencies": [torch_pin(installed, template)]}
