"""What every merge method is: a name, a paper, declared parameters, an input contract, and a
function from one tensor's inputs to the merged tensor (methods know nothing of files)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

import numpy as np

from ..config import ConfigError
from ..params import Param


@dataclass
class TensorJob:
    """One output tensor to compute."""
    name: str                                # output tensor name (keys random masks)
    shape: tuple[int, ...]
    inputs: list[tuple[np.ndarray, str]]     # (array, dtype name), in the config's input order
    base_index: Optional[int]                # which input is the base model, if any
    params: dict                             # global parameters, resolved for this tensor
    input_params: list[dict]                 # per-input parameters (empty dict for the base)
    work: str = "float32"                    # working dtype: inputs are rounded to it
    out: str = "float32"                     # output dtype
    seed: int = 0
    # reusable output array (size and dtype of the output), or, for a method with file_output, a
    # kernels.FileTarget: the result is written there and merge() returns None
    buffer: Union[np.ndarray, tuple, None] = None

    @property
    def base(self) -> tuple[np.ndarray, str]:
        return self.inputs[self.base_index]

    @property
    def non_base(self) -> list[int]:
        return [i for i in range(len(self.inputs)) if i != self.base_index]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    paper: str
    parameters: tuple[Param, ...] = ()
    base: str = "ignored"              # "required", "optional" or "ignored" (the base is just an input)
    min_inputs: int = 1
    max_inputs: Optional[int] = None
    min_non_base: int = 0
    max_non_base: Optional[int] = None
    tags: tuple = field(default=())
    # merge() hands job.buffer to one kernel call and returns its result as it is: the executor
    # may give it a file target (the kernel writes the output file itself)
    file_output: ClassVar[bool] = False

    def param(self, name: str) -> Param:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def check_inputs(self, models: list[str], base: Optional[str], where: str) -> None:
        """Structural checks on one output slice's inputs (before any work)."""
        n = len(models)
        non_base = [m for m in models if m != base] if self.base != "ignored" else models
        if self.base == "required" and (base is None or base not in models):
            raise ConfigError(f"base_model: {self.name} requires a base model ({where})")
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = f"{self.min_inputs}" + ("" if self.max_inputs == self.min_inputs else
                                            f" to {self.max_inputs}" if self.max_inputs else " or more")
            raise ConfigError(f"{where}: {self.name} takes {want} input models, got {n}")
        if len(non_base) < self.min_non_base or (self.max_non_base is not None and len(non_base) > self.max_non_base):
            raise ConfigError(f"{where}: {self.name} needs {self.min_non_base}"
                              f"{'' if self.max_non_base == self.min_non_base else ' or more'} models besides the base, "
                              f"got {len(non_base)}")

    def check_params(self, job: TensorJob, where: str) -> None:
        """Value checks on resolved parameters (before any work); raise ConfigError."""

    def merge(self, job: TensorJob) -> np.ndarray:
        raise NotImplementedError
