"""Device choice, mixed precision (``train.amp``), and the same model on CUDA (bf16 autocast) as on the
CPU (GPU tests skip without one). Training in bf16 / fp16: tests/bilevel/test_setup.py."""
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.config import ConfigError, TrainConfig
from pipeline.device import amp_dtype, autocast, grad_scaler, pick_device, to_device
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_what_exists():
    assert pick_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert pick_device("cpu").type == "cpu"
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def test_autocast_is_a_no_op_on_cpu():
    with autocast(torch.device("cpu")):
        x = torch.ones(2, 2) @ torch.ones(2, 2)
    assert x.dtype == torch.float32


def test_train_amp_modes_and_their_scaler():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype("auto", cpu) is None and amp_dtype("auto", cuda) == torch.bfloat16 and amp_dtype("off", cuda) is None
    with autocast(cpu, True, amp_dtype("bf16", cpu)):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16  # explicit bf16 runs on the CPU too
    with autocast(cpu, False, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert grad_scaler(torch.float16, cpu) is not None and grad_scaler(torch.bfloat16, cpu) is None
    assert to_device(torch.ones(2), cpu).device == cpu
    with pytest.raises(ValueError, match="unknown amp mode"):
        amp_dtype("fp8", cpu)
    with pytest.raises(ConfigError, match="fp16 only with the first-order"):
        TrainConfig(amp="fp16", strategy="unrolled")
    TrainConfig(amp="bf16", strategy="unrolled")  # bf16 needs no scaler: every strategy


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_autocast_matches_cpu():
    torch.manual_seed(0)
    model = build_model(ModelConfig(stages=3, denoiser_width=16), 1).eval()
    y = torch.rand(2, 1, 96, 80)
    k = torch.rand(2, 9, 9)
    k = k / k.sum(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        ref = model(BlurPhysics(y, k)).x
        gpu = model.cuda()
        with autocast(torch.device("cuda")):
            out = gpu(BlurPhysics(y.cuda(), k.cuda())).x.float().cpu()
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05  # bf16 convolutions; the FFT data step stays float32
