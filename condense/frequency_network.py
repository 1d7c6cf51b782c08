"""NCFM's learned sampling of the characteristic function's frequencies (`--cf_sampling_net`).

Wang et al. (CVPR 2025) cast distribution matching as a min-max game: the synthetic images minimise the CF
discrepancy while a sampling network picks the frequencies t where the two distributions differ most, maximising
it. The network (NCFM's SampleNet) maps Gaussian noise through three Linear + BatchNorm1d layers (LeakyReLU 0.2,
then Tanh) and repeats each output row REPEAT times, giving `frequencies` rows of the feature size. Its noise is
drawn per class and iteration from the keyed draws, so a class's frequencies do not depend on the process that owns
it. After each alignment step of the pixels, its own SGD takes an ascent step on the same loss; under torchrun the
gradients of every rank's classes are summed first, so every rank holds the same network (the joint schedule: one
step per view on every rank).
"""
import math

import torch
import torch.distributed as dist
from torch import nn

from data.streams import key
from utils import preserved_rng

REPEAT = 16  # NCFM's t_repeat: each learned frequency is used this many times
NOISE_VAR = 1.0  # NCFM's sampling_net_t_var


class FrequencyNetwork(nn.Module):
    """Noise (rows, dim) -> frequencies (frequencies, dim): NCFM's SampleNet."""

    def __init__(self, dim, frequencies):
        super().__init__()
        self.dim, self.frequencies = dim, frequencies
        self.rows = math.ceil(frequencies / REPEAT)
        layers = []
        for i in range(3):
            layers += [nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.LeakyReLU(0.2) if i < 2 else nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, noise):
        return self.layers(noise).repeat(REPEAT, 1)[:self.frequencies]


class LearnedFrequencies:
    """The sampling network with its optimiser, as cf_loss's `sampler(class id, draws)`; its `step` after each
    alignment step of the pixels is the ascent (maximize=True)."""

    def __init__(self, dim, frequencies, device, lr, momentum=0.5, seed=0, world=None):
        with preserved_rng():  # its initial weights are the seed's, and the run's random streams stay put
            torch.manual_seed(key(seed, "sampler", 0) >> 1)
            self.net = FrequencyNetwork(dim, frequencies).to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum, maximize=True)
        self.world = world

    def __call__(self, c, draws):
        """Class c's frequencies in this iteration: the network on noise keyed by (iteration, class)."""
        noise = draws.normal(self.net.rows, self.net.dim, "sampler", c) * NOISE_VAR ** 0.5
        return self.net(noise)

    def zero_grad(self):
        """Zero gradients that exist from the start (a rank's all-reduce needs them even before its first step)."""
        for p in self.net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()

    def step(self):
        """The ascent step; under torchrun on the gradients summed over the ranks."""
        if self.world is not None and self.world.size > 1:
            grads = [p.grad for p in self.net.parameters()]
            flat = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(flat)
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))
        self.optimizer.step()

    def state_dict(self):
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
