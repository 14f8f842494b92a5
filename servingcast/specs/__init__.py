"""Hardware, model and precision specifications, and the catalogs that hold them."""

from servingcast.specs.catalog import (
    config_dir,
    get_hardware,
    get_model,
    hardware_catalog,
    model_catalog,
)
from servingcast.specs.hardware import Efficiency, HardwareSpec, Interconnect, Overheads
from servingcast.specs.model import MLASpec, ModelSpec, MoESpec
from servingcast.specs.precision import PRESETS, Precision, get_precision

__all__ = [
    "PRESETS",
    "Efficiency",
    "HardwareSpec",
    "Interconnect",
    "MLASpec",
    "MoESpec",
    "ModelSpec",
    "Overheads",
    "Precision",
    "config_dir",
    "get_hardware",
    "get_model",
    "get_precision",
    "hardware_catalog",
    "model_catalog",
]
