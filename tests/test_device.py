"""Device choice, and the same model on CUDA (bf16 autocast) as on the CPU (GPU tests skip without one)."""
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.device import autocast, pick_device
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
