"""kNN classification on frozen features (cosine similarity): the evaluation protocol and the pretraining's monitor."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dspnet_d2.errors import InvalidInputError


@torch.no_grad()
def knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, k: int,
               num_classes: int, temperature: float | None = None, chunk: int = 1024) -> torch.Tensor:
    """Class scores of each test sample from its ``k`` nearest training samples by cosine similarity.

    ``temperature=None``: majority vote (each neighbour counts 1; ties go to the class whose
    neighbours are more similar). Otherwise neighbours vote with weight ``exp(sim / temperature)``.
    """
    if k < 1 or k > len(train_features):
        raise InvalidInputError(f"k={k} must be in 1..{len(train_features)} (the size of the feature bank)")
    bank = F.normalize(train_features.float(), dim=1)
    scores = []
    for start in range(0, len(test_features), chunk):
        query = F.normalize(test_features[start:start + chunk].float(), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        labels = train_labels[idx]
        if temperature is None:
            weights = torch.ones_like(sim) + sim * 1e-6  # similarity only breaks ties
        else:
            weights = (sim / temperature).exp()
        votes = torch.zeros(len(query), num_classes, device=query.device)
        votes.scatter_add_(1, labels, weights)
        scores.append(votes)
    return torch.cat(scores)
