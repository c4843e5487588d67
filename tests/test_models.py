"""The reference models: shapes, closed-form sizes, and the structural rules the compressor relies on."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from lwdc.models import create_model, list_models, register_model

ONE_D = {"tinycnn1d"}
# signal models take their own input: (channels, samples) of 8 kHz audio or 128 Hz EEG epochs
SIGNAL = {"m5": (1, 8000), "logmel_dscnn": (1, 8000), "eegnet": (4, 116), "farahat1d": (4, 116)}
TWO_D = [name for name in list_models() if name not in ONE_D and name not in SIGNAL]
# EEG models keep PyTorch's default initialisation (EEGNet's reference uses Keras' Glorot, not Kaiming)
DEFAULT_INIT = {"eegnet", "farahat1d"}


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    if name in SIGNAL:
        kwargs["in_channels"] = SIGNAL[name][0]
    return create_model(name, **kwargs)


def _example(name: str, n: int = 2, channels: int = 3) -> torch.Tensor:
    if name in SIGNAL:
        return torch.randn(n, *SIGNAL[name])
    return torch.randn(n, channels, 64) if name in ONE_D else torch.randn(n, channels, 32, 32)


def test_registry_lists_the_reference_models():
    expected = {f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)} | {"vgg11", "vgg16", "mobilenetv2", "tinycnn1d"}
    assert expected <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_classifies(name):
    model = _build(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(_example(name))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TWO_D)
@pytest.mark.parametrize("size", [(8, 8), (9, 13)])
def test_small_and_odd_inputs_work(name, size):
    model = _build(name, num_classes=3, in_channels=1, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 3)


def test_tinycnn1d_is_one_dimensional():
    model = _build("tinycnn1d", num_classes=5, in_channels=4)
    assert sum(isinstance(m, nn.Conv1d) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    for length in (8, 117):
        assert model(torch.randn(3, 4, length)).shape == (3, 5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("resnet21")
    for name in list_models():
        assert name in str(err.value)


def test_register_model_refuses_a_second_builder_under_a_taken_name():
    def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Linear(1, 1)

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet20)
    assert isinstance(create_model("resnet20"), nn.Module) and not isinstance(create_model("resnet20"), nn.Linear)


# ------------------------------------------------------------------------------------------------ closed forms
def _resnet_counts(depth: int, num_classes: int = 10, cin: int = 3, widths=(16, 32, 64), hw: int = 32):
    """Parameters and MACs of a CIFAR ResNet with option-B shortcuts, derived by hand, layer by layer."""
    n = (depth - 2) // 6
    params = 9 * cin * widths[0] + 2 * widths[0]              # stem conv + BN
    macs = 9 * cin * widths[0] * hw * hw
    c, size = widths[0], hw
    for s, w in enumerate(widths):
        for i in range(n):
            stride = 2 if s > 0 and i == 0 else 1
            size //= stride
            params += 9 * c * w + 2 * w + 9 * w * w + 2 * w   # conv1 + bn1 + conv2 + bn2
            macs += (9 * c * w + 9 * w * w) * size * size
            if stride != 1 or c != w:                         # 1x1 shortcut conv + BN
                params += c * w + 2 * w
                macs += c * w * size * size
            c = w
    params += c * num_classes + num_classes
    macs += c * num_classes
    return params, macs


def _count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def test_resnet20_matches_closed_form():
    params, macs = _count(create_model("resnet20"), torch.randn(1, 3, 32, 32))
    assert (params, macs) == _resnet_counts(20)
    # 269,722 for the option-A network (He et al.: "0.27M"), plus two 1x1 shortcut convs (512 + 2,048) and BNs (192)
    assert params == 269_722 + 2_752 == 272_474
    assert macs == 40_813_184


@pytest.mark.parametrize("depth,width,classes", [(8, 1.0, 10), (56, 1.0, 100), (14, 0.5, 10), (110, 1.0, 10)])
def test_resnet_family_matches_closed_form(depth, width, classes):
    widths = tuple(max(1, round(c * width)) for c in (16, 32, 64))
    model = create_model(f"resnet{depth}", num_classes=classes, width=width)
    assert sum(p.numel() for p in model.parameters()) == _resnet_counts(depth, classes, 3, widths)[0]


def test_vgg16_and_mobilenetv2_sizes():
    assert sum(isinstance(m, nn.Conv2d) for m in create_model("vgg16").modules()) == 13
    assert sum(isinstance(m, nn.Conv2d) for m in create_model("vgg11").modules()) == 8
    assert _count(create_model("vgg16"), torch.randn(1, 3, 32, 32)) == (14_724_042, 313_201_664)
    assert _count(create_model("mobilenetv2"), torch.randn(1, 3, 32, 32)) == (2_236_682, 87_976_448)


def test_width_scales_channels():
    model = create_model("resnet20", width=0.5)
    assert model.conv1.out_channels == 8 and model.fc.in_features == 32
    small = create_model("mobilenetv2", width=0.25)
    assert small.stem[0].out_channels == 8
    full = create_model("mobilenetv2")
    assert sum(p.numel() for p in small.parameters()) < 0.3 * sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError):
        create_model("resnet20", width=0)


def test_mobilenetv2_dropout_is_optional():
    assert isinstance(create_model("mobilenetv2").dropout, nn.Identity)
    assert isinstance(create_model("mobilenetv2", dropout=0.2).dropout, nn.Dropout)


@pytest.mark.parametrize("name", [n for n in list_models() if n not in DEFAULT_INIT])
def test_init(name):
    model = _build(name)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            assert m.bias is None
            fan_out = m.out_channels * m.weight[0, 0].numel()
            assert abs(m.weight.std().item() - (2 / fan_out) ** 0.5) < 0.5 * (2 / fan_out) ** 0.5


# ------------------------------------------------------------------------------------------------ structural rules
class _OpsOutsideLeaves(TorchFunctionMode):
    """Records the torch functions called while no leaf module is running (the models' own forward code)."""

    def __init__(self):
        super().__init__()
        self.depth, self.calls = 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list_models())
def test_each_module_called_once_and_forward_uses_only_modules_and_add(name):
    model = _build(name, num_classes=4, width=0.25, **({"dropout": 0.1} if name == "mobilenetv2" else {}))
    calls: dict[str, int] = {}
    mode = _OpsOutsideLeaves()
    hooks = []
    for module_name, module in model.named_modules():
        def post(_m, _inp, _out, key=module_name, leaf=not list(module.children())):
            calls[key] = calls.get(key, 0) + 1
            mode.depth -= leaf

        def pre(_m, _inp, leaf=not list(module.children())):
            mode.depth += leaf

        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    x = _example(name)
    with mode:
        model(x)
    for h in hooks:
        h.remove()
    names = [n for n, _ in model.named_modules(remove_duplicate=False)]
    assert len(set(map(id, model.modules()))) == len(names), "a module instance is registered twice"
    assert {n: c for n, c in calls.items() if c != 1} == {}
    assert set(names) == set(calls), f"modules never called: {set(names) - set(calls)}"
    assert set(mode.calls) <= {"__add__", "add", "flatten", "cat", "__get__"}, mode.calls


def test_models_and_data_import_nothing_else_from_lwdc():
    root = Path(__file__).resolve().parents[1] / "lwdc"
    for package in ("models", "data"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    assert node.level <= 1, f"{path.name} imports from outside lwdc.{package}"
                    assert node.level == 1 or not (node.module or "").startswith("lwdc"), path.name
                elif isinstance(node, ast.Import):
                    assert not any(a.name.startswith("lwdc") for a in node.names), path.name
