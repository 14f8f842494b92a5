import pytest

from servingcast.costmodel import CostModel, Parallelism, max_batch_size, memory_plan, require_fit
from servingcast.costmodel.memory import kv_bytes_per_token
from servingcast.errors import InfeasibleError
from servingcast.specs import get_hardware, get_model, get_precision


def cm(model: str, hw: str, prec: str, tp: int = 1, pp: int = 1) -> CostModel:
    return CostModel(get_model(model), get_hardware(hw), get_precision(prec),
                     Parallelism(tp=tp, pp=pp))


def test_weights_per_gpu_follow_parameters() -> None:
    plan = memory_plan(cm("llama-3.1-70b", "h100-sxm", "fp16", tp=4))
    # 70.55e9 params * 2 B / 4 GPUs = 35.3 GB.
    assert plan.weights_bytes_per_gpu == pytest.approx(35.28e9, rel=0.01)
    fp8 = memory_plan(cm("llama-3.1-70b", "h100-sxm", "fp8", tp=4))
    # fp8 halves the matrices; embeddings and LM head stay 16-bit (2 * 128256 * 8192 * 2 B / 4).
    assert fp8.weights_bytes_per_gpu == pytest.approx((70.55e9 - 2.1e9) / 4 + 2.1e9 / 2,
                                                      rel=0.01)


def test_kv_bytes_per_token() -> None:
    # Llama-3.1-70B fp16: 80 layers * 8 heads * 128 * 2 (K, V) * 2 B = 327,680 B.
    assert kv_bytes_per_token(cm("llama-3.1-70b", "h100-sxm", "fp16", tp=4)) == 327_680
    # DeepSeek-V3 fp8: 61 layers * 576 * 1 B.
    assert kv_bytes_per_token(cm("deepseek-v3", "h200-sxm", "fp8", tp=8)) == 61 * 576
    plan = memory_plan(cm("llama-3.1-70b", "h100-sxm", "fp16", tp=4))
    assert plan.kv_bytes_per_token_per_gpu == 327_680 / 4


def test_capacity_and_max_batch() -> None:
    plan = memory_plan(cm("llama-3.1-8b", "h100-sxm", "fp16"))
    free = plan.usable_bytes_per_gpu - plan.weights_bytes_per_gpu - plan.activation_bytes_per_gpu
    assert plan.kv_capacity_tokens == pytest.approx(free / plan.kv_bytes_per_token_per_gpu,
                                                    abs=plan.block_size)
    assert plan.kv_capacity_tokens % plan.block_size == 0
    assert max_batch_size(plan, 1000) == plan.kv_capacity_tokens // 1008  # whole 16-token blocks


def test_trtllm_free_memory_rule_gives_more_kv_when_weights_are_large() -> None:
    model = cm("llama-3.1-70b", "h100-sxm", "fp8")
    vllm = memory_plan(model)
    trt = memory_plan(model, kv_cache_free_memory_fraction=0.9)
    assert trt.kv_capacity_tokens > vllm.kv_capacity_tokens


def test_not_fitting_gives_the_numbers() -> None:
    model = cm("llama-3.1-405b", "h100-sxm", "fp16", tp=8)
    plan = memory_plan(model)
    with pytest.raises(InfeasibleError, match=r"does not fit: each GPU needs 10\d\.\d GB of "
                                              r"weights.*To fix: raise tp or pp"):
        require_fit(model, plan, 1000, 1)


def test_batch_too_large_says_how_many_fit() -> None:
    model = cm("llama-3.1-8b", "l4", "fp16")
    plan = memory_plan(model)
    n = max_batch_size(plan, 4096)
    with pytest.raises(InfeasibleError, match=rf"room for {n} sequences.*--batch-size {n}"):
        require_fit(model, plan, 4096, n + 1)


def test_pipeline_halves_weights_per_gpu() -> None:
    one = memory_plan(cm("llama-3.1-70b", "h200-sxm", "fp8", tp=2)).weights_bytes_per_gpu
    two = memory_plan(cm("llama-3.1-70b", "h200-sxm", "fp8", tp=2, pp=2)).weights_bytes_per_gpu
    assert two == pytest.approx(one / 2, rel=0.05)
