import pytest
import torch

from swapline.ops.model import PRESETS, SIDES, FaceSwapAE, ModelConfig


def _forward_shapes(config: ModelConfig, batch: int = 2) -> None:
    torch.manual_seed(0)
    model = FaceSwapAE(config)
    x = torch.rand(batch, 3, config.resolution, config.resolution)
    with torch.no_grad():
        for side in SIDES:
            rgb, mask = model(x, side)
            assert rgb.shape == (batch, 3, config.resolution, config.resolution)
            assert mask.shape == (batch, 1, config.resolution, config.resolution)
            assert rgb.min() >= 0 and rgb.max() <= 1 and mask.min() >= 0 and mask.max() <= 1


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_at_64(preset):
    _forward_shapes(ModelConfig(resolution=64, preset=preset), batch=1)


@pytest.mark.parametrize("resolution", [128, 256])
def test_lite_at_higher_resolutions(resolution):
    config = ModelConfig(resolution=resolution, preset="lite")
    _forward_shapes(config, batch=1)
    # One extra stage per doubling at both ends; the bottleneck stays 4x4.
    assert len(config.encoder_channels()) == 4 + config.extra_stages
    assert len(config.decoder_channels()) == 3 + config.extra_stages


def test_original_preset_matches_the_2018_layer_sizes():
    model = FaceSwapAE(ModelConfig(64, "original"))
    convs = [block[0].out_channels for block in model.encoder.convs]
    assert convs == [128, 256, 512, 1024]
    assert model.encoder.dense_in.out_features == 1024
    assert model.encoder.dense_out.out_features == 4 * 4 * 1024
    assert model.encoder.upscale[0].out_channels == 512 * 4  # pixel shuffle -> 512
    assert [block[0].out_channels // 4 for block in model.decoders["a"].upscales] == [256, 128, 64]
    assert model.decoders["a"].head.kernel_size == (5, 5)


def test_forward_backward_reaches_encoder_and_only_the_used_decoder():
    torch.manual_seed(0)
    model = FaceSwapAE(ModelConfig())
    rgb, mask = model(torch.rand(2, 3, 64, 64), "a")
    (rgb.mean() + mask.mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoders["a"].parameters())
    assert all(p.grad is None for p in model.decoders["b"].parameters())


def test_decoders_are_independent_and_encoder_shared():
    model = FaceSwapAE(ModelConfig())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(model(x, "a")[0], model(x, "b")[0])
        z = model.encode(x)
        assert torch.equal(model.decode(z, "b")[0], model(x, "b")[0])
    with pytest.raises(ValueError):
        model(x, "c")


def test_config_round_trip_and_validation():
    config = ModelConfig(resolution=128, preset="original")
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    with pytest.raises(ValueError):
        ModelConfig(resolution=96)
    with pytest.raises(ValueError):
        ModelConfig(preset="huge")
