import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from dsc_sklearn.defence.modules import MLP, SmallCNN


def _assert_gradients_flow(module, n_features, n_classes):
    torch.manual_seed(0)
    X = torch.randn(6, n_features, requires_grad=True)
    y = torch.randint(0, n_classes, (6,))
    cross_entropy(module(X), y).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert X.grad is not None and X.grad.abs().sum() > 0


@pytest.mark.parametrize("hidden", [(), (7,), (5, 9, 4)])
def test_mlp_output_shape_and_layers(hidden):
    module = MLP(12, 4, hidden_layer_sizes=hidden)
    assert module(torch.zeros(3, 12)).shape == (3, 4)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [*hidden, 4]
    assert linears[0].in_features == 12
    assert sum(isinstance(m, nn.ReLU) for m in module.modules()) == len(hidden)


def test_mlp_default_hidden_layer():
    module = MLP(8, 3)
    assert module.layers[0].out_features == 100
    assert module(torch.randn(2, 8)).shape == (2, 3)


def test_mlp_gradients_flow():
    torch.manual_seed(0)
    _assert_gradients_flow(MLP(10, 3, hidden_layer_sizes=(16, 16)), 10, 3)


@pytest.mark.parametrize(
    "n_features, image_shape",
    [(64, (1, 8, 8)), (48, (3, 4, 4)), (40, (1, 40)), (42, (2, 21)), (4, (1, 2, 2)), (64, None)],
)
def test_small_cnn_output_shape(n_features, image_shape):
    torch.manual_seed(0)
    module = SmallCNN(n_features, 5, image_shape=image_shape)
    assert module(torch.randn(7, n_features)).shape == (7, 5)
    assert module(torch.randn(1, n_features)).shape == (1, 5)


def test_small_cnn_default_shape_is_square_single_channel():
    assert SmallCNN(49, 2).image_shape == (1, 7, 7)
    assert SmallCNN(36, 2, image_shape=[1, 6, 6]).image_shape == (1, 6, 6)


@pytest.mark.parametrize("image_shape, conv", [((1, 8, 8), nn.Conv2d), ((1, 64), nn.Conv1d)])
def test_small_cnn_uses_convolutions_matching_the_shape(image_shape, conv):
    module = SmallCNN(64, 3, image_shape=image_shape, channels=(4, 6))
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == 2 and all(type(m) is conv for m in convs)
    assert [m.out_channels for m in convs] == [4, 6]


@pytest.mark.parametrize(
    "n_features, image_shape, match",
    [
        (64, (1, 8, 7), "holds 56 values"),
        (50, None, "50 features"),
        (64, (64,), "channels, length"),
        (64, (1, 1, 8, 8), "channels, length"),
    ],
)
def test_small_cnn_rejects_wrong_image_shape(n_features, image_shape, match):
    with pytest.raises(ValueError, match=match):
        SmallCNN(n_features, 3, image_shape=image_shape)


@pytest.mark.parametrize("image_shape, n_features", [((1, 8, 8), 64), ((2, 20), 40)])
def test_small_cnn_gradients_flow(image_shape, n_features):
    torch.manual_seed(0)
    module = SmallCNN(n_features, 4, image_shape=image_shape, channels=(4, 8))
    _assert_gradients_flow(module, n_features, 4)


def test_small_cnn_rows_are_independent():
    torch.manual_seed(0)
    module = SmallCNN(64, 3, channels=(4, 8)).eval()
    X = torch.randn(5, 64)
    full = module(X)
    torch.testing.assert_close(module(X[2:3]), full[2:3], rtol=1e-5, atol=1e-6)
