"""Where each iteration's encoder comes from: `pick(t)` -> (encoder, trained expert or None).

ExpertBank is DANCE's: expert k and lam ~ U(lam_min, lam_max) give the middle encoder lam * init_k +
(1 - lam) * trained_k, and the trained expert k calibrates. RandomEncoders is plain DM's (--num_premodel 0): a
network with fresh random weights each iteration and no calibration. Both draw from keys of (seed, t), so every
process picks the same encoder.
"""
import torch

from condense.expert_folder import check_experts, checkpoint_path, load_weights
from data.streams import host_uniform, key
from models import compiled, make_network, reinitialize_
from utils import preserved_rng


def frozen_network(network, device):
    """A network of `network`'s description with its parameters out of autograd."""
    return make_network(network, device).requires_grad_(False)


def copy_all(targets, sources):
    """targets[i].copy_(sources[i]) for every i, as one fused call where torch has it."""
    if not targets:
        return
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
    else:
        for target, source in zip(targets, sources):
            target.copy_(source)


class ExpertBank:
    """Every expert's initial and trained weights, loaded ONCE onto the device (no disk read per iteration).

    `middle(k, lam)` writes lam * init + (1 - lam) * trained into one reusable module (parameters; buffers are the
    trained expert's). `expert(k)` is the trained network. No grads anywhere. With `compile` both are handed out
    through torch.compile (the same parameters, so the in-place writes reach them). The folder is checked first
    (experts present, of this network, trained without the held-out `split`): `pretrain_hint` and `split_hint` say
    how to fix it.
    """

    def __init__(self, folder, count, network, device, pretrain_hint, split=None, split_hint="", compile=False,
                 seed=0, lam_min=0.0, lam_max=1.0):
        check_experts(folder, count, network, split, pretrain_hint, split_hint)
        self.seed, self.lam_min, self.lam_max = seed, lam_min, lam_max
        self.experts, self.inits = [], []
        for i in range(count):
            trained = frozen_network(network, device)
            trained.load_state_dict(load_weights(checkpoint_path(folder, i, "trained"), trained, pretrain_hint))
            init = load_weights(checkpoint_path(folder, i, "init"), trained, pretrain_hint)
            self.experts.append(trained)
            self.inits.append([init[name].to(device) for name, _ in trained.named_parameters()])
        self.encoder = frozen_network(network, device)
        self._params = list(self.encoder.parameters())
        self._buffers = list(self.encoder.buffers())
        self._run_encoder = compiled(self.encoder, compile)
        self._run_experts = [compiled(e, compile) for e in self.experts]

    def __len__(self):
        return len(self.experts)

    def expert(self, k):
        """The trained expert k."""
        return self._run_experts[k]

    @torch.no_grad()
    def middle(self, k, lam):
        """The middle encoder lam * init_k + (1 - lam) * trained_k, written in place (fused over all tensors)."""
        trained = self.experts[k]
        copy_all(self._params, list(trained.parameters()))
        torch._foreach_lerp_(self._params, self.inits[k], lam)
        # NOTE(reference): buffers follow the trained expert (the official code leaves random-init ones)
        copy_all(self._buffers, list(trained.buffers()))
        return self._run_encoder

    def pick(self, iteration):
        """Iteration t's (middle encoder, trained expert): expert k and lam ~ U(lam_min, lam_max), keyed by
        (seed, t) on the host."""
        k = min(int(host_uniform(self.seed, "encoder", iteration, 0) * len(self)), len(self) - 1)
        lam = self.lam_min + (self.lam_max - self.lam_min) * host_uniform(self.seed, "encoder", iteration, 1)
        return self.middle(k, lam), self.expert(k)


class RandomEncoders:
    """Plain DM: one network redrawn in place each iteration with the weights a new network would get (keyed by
    (seed, t)), and no expert to calibrate with."""

    def __init__(self, network, device, seed=0, compile=False):
        self.network, self.seed = network, seed
        with preserved_rng():  # building it leaves the run's random streams where they were
            self.net = frozen_network(network, device)
        self._run = compiled(self.net, compile)

    def pick(self, iteration):
        """Iteration t's (random network, None)."""
        with preserved_rng():
            torch.manual_seed(key(self.seed, "network", iteration) >> 1)
            if not reinitialize_(self.net):  # spectral norm draws vectors only a new network draws
                self.net.load_state_dict(make_network(self.network, "cpu").state_dict())
        return self._run, None
