"""Finding hardware and models by name, in the catalogs or on disk.

The catalogs are the YAML files of ``configs/hardware`` and ``configs/models``. They are found,
in this order, in ``$SERVINGCAST_CONFIG_DIR``, in the source checkout (``configs/`` beside the
package, the editable install) and in ``<prefix>/share/servingcast/configs`` (a wheel install).
Names match case-insensitively, with ``_`` and spaces read as ``-``, against each entry's
``name`` and ``aliases``; an unknown name gets the closest names as suggestions.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from servingcast._yaml import load_model
from servingcast.errors import ConfigError
from servingcast.specs.hardware import HardwareSpec
from servingcast.specs.model import ModelSpec

S = TypeVar("S", HardwareSpec, ModelSpec)


def config_dir() -> Path:
    """The folder holding ``hardware/`` and ``models/``."""
    candidates = []
    env = os.environ.get("SERVINGCAST_CONFIG_DIR")
    if env:
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[2] / "configs")
    candidates.append(Path(sys.prefix) / "share" / "servingcast" / "configs")
    for candidate in candidates:
        if (candidate / "hardware").is_dir() and (candidate / "models").is_dir():
            return candidate
    raise ConfigError(
        "cannot find the catalogs (configs/hardware, configs/models); looked in "
        + ", ".join(str(c) for c in candidates)
        + ". To fix: reinstall servingcast or set SERVINGCAST_CONFIG_DIR"
    )


def normalize(name: str) -> str:
    """Catalog key of a user-written name: lower case, ``_`` and spaces as ``-``."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _load_folder(folder: str, cls: type[S]) -> dict[str, S]:
    entries: dict[str, S] = {}
    for path in sorted((config_dir() / folder).glob("*.yaml")):
        spec = load_model(path, cls)
        if path.stem != spec.name:
            raise ConfigError(
                f"{path}: name {spec.name!r} differs from the file name. To fix: rename the file "
                f"to {spec.name}.yaml or change name"
            )
        entries[spec.name] = spec
    return entries


@functools.cache
def hardware_catalog() -> dict[str, HardwareSpec]:
    """Every catalog device by canonical name."""
    return _load_folder("hardware", HardwareSpec)


@functools.cache
def model_catalog() -> dict[str, ModelSpec]:
    """Every catalog model by canonical name."""
    return _load_folder("models", ModelSpec)


#: The ``servingcast catalog`` argument that lists each kind of entry.
_LISTING = {"hardware": "hardware", "model": "models"}


def _lookup(name: str, catalog: dict[str, S], what: str, extra_hint: str) -> S:
    key = normalize(name)
    index: dict[str, S] = {}
    for spec in catalog.values():
        index[spec.name] = spec
        for alias in spec.aliases:
            index[normalize(alias)] = spec
    if key in index:
        return index[key]
    close = difflib.get_close_matches(key, list(index), n=3, cutoff=0.5)
    names = sorted({index[c].name for c in close})
    hint = f"did you mean {', '.join(names)}? " if names else ""
    raise ConfigError(
        f"unknown {what} {name!r}. To fix: {hint}See 'servingcast catalog {_LISTING[what]}' "
        f"for the list{extra_hint}"
    )


#: Devices read from YAML files in this process, by name. The planner and the simulator name a
#: device by its ``name`` once they have resolved it (plans, exported scenarios), so a device
#: from a file is found by that name too; a catalog entry of the same name wins.
_FILE_HARDWARE: dict[str, HardwareSpec] = {}


def get_hardware(name: str | HardwareSpec) -> HardwareSpec:
    """A catalog device by name or alias (``h100``, ``H100-SXM``), or a YAML file path (then
    also, for the rest of the process, by the file's ``name``)."""
    if isinstance(name, HardwareSpec):
        return name
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = load_model(path, HardwareSpec)
        _FILE_HARDWARE[spec.name] = spec
        return spec
    return _lookup(name, {**_FILE_HARDWARE, **hardware_catalog()}, "hardware",
                   " or pass a YAML file of your own")


def get_model(name: str | ModelSpec) -> ModelSpec:
    """A model by catalog name or alias, a Hugging Face ``config.json`` (or its folder), or YAML."""
    if isinstance(name, ModelSpec):
        return name
    path = Path(name)
    if path.is_dir() or path.suffix == ".json":
        from servingcast.specs.hf import load_hf_config

        return load_hf_config(path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_model(path, ModelSpec)
    return _lookup(
        name, model_catalog(), "model", ", or pass a Hugging Face config.json or its folder"
    )


def describe(spec: BaseModel) -> str:
    """One-line description used by the catalog listing."""
    return getattr(spec, "display_name", type(spec).__name__)
