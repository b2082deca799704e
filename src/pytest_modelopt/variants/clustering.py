"""Weight clustering (weight sharing): each layer's weights snapped to k shared values.

The variant runs the clustered fp32 model; what ships, and what its size counts, is a file of
per-layer codebooks (k float32 values) plus the index of each weight's value (4 bits each for
k <= 16, else 8 bits), and the tensors left unclustered (biases, norms, small layers).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import NoEffectError, ParameterError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class ClusteredParams:
    """Parameters of ``clustered``."""

    clusters: int = param(
        16, "shared values per layer (k of k-means); 16 or fewer stores 4-bit indices"
    )
    min_params: int = param(1024, "smaller layers stay unclustered")
    seed: int = param(0, "k-means seed")


@register_technique(
    "clustered",
    backend="torch",
    description="k-means weight sharing per layer; size counted as codebooks + packed indices",
    params=ClusteredParams,
)
def build_clustered(ctx: BuildContext) -> Variant:
    """Share weights: each large Linear or Conv weight replaced by its k-means codebook values.

    The file holds codebooks and packed indices (4-bit up to 16 clusters, else 8-bit); the variant
    runs as the fp32 model with the shared values.
    """
    import torch
    from torch import nn

    from pytest_modelopt.variants.torch_eager import saved_variant

    clusters = int(ctx.params["clusters"])
    if not 2 <= clusters <= 256:
        raise ParameterError(f"clustered: clusters must be in [2, 256], got {clusters}")
    model = ctx.model.eval()
    clustered: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        if weight is None or weight.numel() < int(ctx.params["min_params"]):
            continue
        codebook, labels = cluster_weights(weight.detach(), clusters, int(ctx.params["seed"]))
        with torch.no_grad():
            weight.copy_(codebook[labels].reshape(weight.shape))
        distinct = int(torch.unique(weight).numel())
        if distinct > clusters:
            raise NoEffectError(f"clustered: {name} holds {distinct} values, not <= {clusters}")
        clustered[f"{name}.weight"] = (codebook, labels, tuple(weight.shape))
    if not clustered:
        raise NoEffectError(
            f"clustered: {ctx.spec.name} has no Linear or Conv weight of at least "
            f"{ctx.params['min_params']} values to cluster"
        )
    index_bits = 4 if clusters <= 16 else 8
    return saved_variant(
        ctx,
        model,
        _packed_state(model, clustered, clusters),
        filename="model.clustered.pt",
        precision="fp32, weight-shared",
        details={
            "clusters": clusters,
            "clustered_layers": len(clustered),
            "index_bits": index_bits,
            "size_counted_as": f"float32 codebooks + {index_bits}-bit indices + other tensors",
        },
        notes=["runs as the fp32 model with shared values; the file holds codebooks + indices"],
        model=model,
    )


def cluster_weights(weight: torch.Tensor, clusters: int, seed: int) -> tuple[Any, Any]:
    """1-D k-means of the weight values (scipy): the codebook and each value's cluster index."""
    import torch
    from scipy.cluster.vq import kmeans2

    values = weight.reshape(-1).double().cpu().numpy()
    # Linear initialisation over the range keeps rare large weights represented (as TF-MOT does).
    start = torch.linspace(values.min(), values.max(), clusters).numpy()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "One of the clusters is empty")  # keeps its centroid
        centroids, labels = kmeans2(values, start, iter=20, minit="matrix", seed=seed)
    return torch.from_numpy(centroids).to(weight.dtype), torch.from_numpy(labels).long()


def _packed_state(
    model: torch.nn.Module,
    clustered: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]],
    clusters: int,
) -> dict[str, Any]:
    import torch

    layers = {}
    for key, (codebook, labels, shape) in clustered.items():
        indices = labels.to(torch.uint8)
        if clusters <= 16:
            indices = _pack_nibbles(indices.numpy())
        layers[key] = {"codebook": codebook.float(), "indices": indices, "shape": shape}
    rest = {key: value for key, value in model.state_dict().items() if key not in clustered}
    return {"clustered": layers, "tensors": rest}


def _pack_nibbles(indices: np.ndarray) -> torch.Tensor:
    import numpy as np
    import torch

    if len(indices) % 2:
        indices = np.append(indices, 0)
    return torch.from_numpy((indices[0::2] | (indices[1::2] << 4)).astype(np.uint8))
