import pytest

from servingcast.costmodel import CostModel, Parallelism
from servingcast.specs import get_hardware, get_model, get_precision
from servingcast.specs.hardware import HardwareSpec, Overheads


def no_overhead(name: str) -> HardwareSpec:
    """A catalog device with its fixed overheads zeroed, for hand-checked arithmetic."""
    return get_hardware(name).model_copy(
        update={"overheads": Overheads(iteration_ms=0.0, layer_us=0.0)})


@pytest.fixture
def llama7b_a100() -> CostModel:
    """Llama-2-7B, fp16, one A100-80GB, flat 0.5 efficiency, no fixed overheads."""
    return CostModel(get_model("llama-2-7b"), no_overhead("a100-sxm4-80gb"),
                     get_precision("fp16"), Parallelism(), 0.5)
