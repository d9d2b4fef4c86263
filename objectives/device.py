"""Where training runs: the device a study asks for (``train.device``) and whether this CPU multiplies bf16
natively (``train.precision: bf16`` is emulated, and slow, where it does not)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from objectives.config import TrainConfig
from objectives.errors import LosstuneError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LosstuneError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


EMULATED_BF16 = (
    "train.precision is bf16, but this CPU has no bf16 instructions (AVX512-BF16 or AMX): torch emulates them, "
    "about 10x slower than fp32 (measured on an AVX2-only EPYC); use precision fp32, the default"
)


@functools.cache  # a fact about the machine, read once per process
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU multiplies bf16 natively: x86's ``avx512_bf16`` or ``amx_bf16`` flag, ARM's ``bf16``
    feature, read from ``/proc/cpuinfo``. None where that cannot be told (no such file: macOS, Windows)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86
            return bool({"avx512_bf16", "amx_bf16"} & set(value.split()))
        if key.strip() == "Features":  # ARM
            return "bf16" in value.split()
    return None


def training_device(train_cfg: TrainConfig) -> torch.device:
    """The device to train on; a warning when bf16 was asked for on a CPU that can only emulate it."""
    device = resolve_device(train_cfg.device)
    if train_cfg.precision == "bf16" and device.type == "cpu" and cpu_has_bf16() is False:
        log.warning(EMULATED_BF16)  # it works, but a user who chose bf16 for speed gets the opposite
    return device
