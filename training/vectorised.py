"""Train N small networks of one architecture at once, as one vectorised model.

A step of one evaluation network or expert is milliseconds of work, so an accelerator mostly waits on
kernel launches. `fit_many` stacks the N networks' parameters (torch.func.stack_module_state) and runs
them as one model: a ConvNet as one network N times as wide (grouped convolutions, `_convnet_grouped`),
any other architecture through torch.func.functional_call under torch.vmap over the network dimension.
One loss (the sum of each network's mean loss, so each network's gradient is exactly its own), one SGD
and one MultiStepLR over the stacked tensors (SGD is elementwise, so this is N independent optimisers).

Each network keeps its own initialisation (the caller builds it), data order (a permutation per network
per epoch), per-sample augmentation draws, CutMix decision, lambda, partner permutation and box.
Random-stream contract: with one network, fit_many makes exactly the draws `training.recipe.fit` makes, in the
same order and shapes, so the same seed gives the same training up to float reduction order. With N > 1
all networks draw from the one stream, interleaved (N permutations per epoch; per batch DSA over all
N x B images, N CutMix decisions, then each mixing network's draws): network i then matches its
sequential twin in initialisation only, and in distribution otherwise. DSA picks one op (crop, scale or
rotate) per call, as the reference does per batch; here that call covers all N batches, so in a given
step the N networks share the op (each network's own sequence of ops is still uniformly random).
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn.utils import parametrize

from data.augment import cross_entropy_many, cutmix_draws, cutmix_loss_many, cutmix_many, normalize
from data.sampler import gather
from models import compiled, make_network
from models.convnet import ConvNet
from training.recipe import autocast, fit, milestones, soft_label_loss, teacher_logits, test_accuracy, test_batches
from utils import rng_state, seed_everything, set_rng_state


def can_vectorise(model):
    """True when `model` trains correctly under torch.vmap: its forward mutates no buffer and draws nothing.

    BatchNorm (running statistics), instance norms that track running statistics, modules with forward
    hooks or parametrisations (spectral norm updates its power-iteration vectors in place) and dropout
    (vmap would need its own random draws per network) are refused; train those one by one with `fit`.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats:
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd):
            return False
        if m._forward_pre_hooks or m._forward_hooks or parametrize.is_parametrized(m):
            return False
    return True


def _check_stackable(models):
    """Refuse an empty list, a network `can_vectorise` refuses, or networks that differ in architecture."""
    if not models:
        raise ValueError("fit_many needs at least one network")
    if not can_vectorise(models[0]):
        raise ValueError(f"{type(models[0]).__name__} cannot be vectorised (BatchNorm, dropout or a forward hook); "
                         f"train it with training.recipe.fit")
    shapes = [(k, tuple(v.shape)) for k, v in models[0].state_dict().items()]
    for i, m in enumerate(models[1:], 1):
        if type(m) is not type(models[0]) or [(k, tuple(v.shape)) for k, v in m.state_dict().items()] != shapes:
            raise ValueError(f"network {i} differs in architecture from network 0; fit_many trains copies of one")


def _groupable(model):
    """True for a ConvNet whose layers `_convnet_grouped` knows (plain convs, GroupNorm or LayerNorm or none)."""
    if type(model) is not ConvNet:
        return False
    layers = model.layers
    return (all(type(c) is nn.Conv2d and c.groups == 1 for c in layers["conv"])
            and all(type(m) in (nn.GroupNorm, nn.LayerNorm) for m in layers["norm"])
            and all(type(m) is nn.ReLU for m in layers["act"]) and all(type(m) is nn.AvgPool2d for m in layers["pool"]))


def _convnet_grouped(base, p, x, shared):
    """ConvNet.forward of N stacked networks as one network N times as wide: logits (N, B, K).

    Activations are (B, N*C, H, W), network i owning channels [i*C, (i+1)*C): each conv is one grouped conv
    (groups = N) with its bias fused, instance/group norm one GroupNorm with N times the groups and its affine
    fused, layer norm a GroupNorm with one group per network, and the classifier one batched matmul. On 2 CPU
    cores, forward + backward of 5 ConvNet-3s ran as fast as 5 sequential ones, where vmap's batching rules
    (separate bias and affine passes, layout copies) took 1.25-1.45x as long.
    With `shared`, x (B, C, H, W) feeds every network, and the first conv is a dense one with N*C outputs.
    """
    layers = base.layers
    n = p["classifier.weight"].shape[0]
    h = x if shared else x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
    for d, conv in enumerate(layers["conv"]):
        w, b = p[f"layers.conv.{d}.weight"], p.get(f"layers.conv.{d}.bias")
        h = F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(), conv.stride, conv.padding, conv.dilation,
                     1 if shared and d == 0 else n)
        if len(layers["norm"]):
            norm = layers["norm"][d]
            w, b = p.get(f"layers.norm.{d}.weight"), p.get(f"layers.norm.{d}.bias")
            if type(norm) is nn.GroupNorm:
                h = F.group_norm(h, n * norm.num_groups, None if w is None else w.flatten(),
                                 None if b is None else b.flatten(), norm.eps)
            else:  # LayerNorm over (C, H, W) of each network = one group per network, then its elementwise affine
                h = F.group_norm(h, n, eps=norm.eps)
                h = h if w is None else h * w.flatten(0, 1)
                h = h if b is None else h + b.flatten(0, 1)
        h = layers["pool"][d](layers["act"][d](h))
    feat = h.reshape(h.shape[0], n, -1).transpose(0, 1)  # (N, B, C*H*W): each network's ConvNet flatten order
    return torch.baddbmm(p["classifier.bias"].unsqueeze(1), feat, p["classifier.weight"].transpose(1, 2))


class StackedNetworks:
    """N networks of one architecture as stacked parameters and buffers (leading dim N), run as one model."""

    def __init__(self, models, device):
        _check_stackable(models)
        self.n = len(models)
        params, buffers = stack_module_state(list(models))
        # Leaves on `device` (a no-op when the networks are there already, as training.recipe.fit expects).
        self.params = {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in params.items()}
        self.buffers = {k: v.detach().to(device) for k, v in buffers.items()}
        # The module only supplies the forward code: functional_call swaps in each network's tensors.
        self.base = copy.deepcopy(models[0]).to("meta")
        self.grouped = _groupable(models[0])
        self._run_grouped, self._run_vmap = _convnet_grouped, self._vmapped

    def compile(self):
        """Run the forward passes through torch.compile from now on."""
        self._run_grouped, self._run_vmap = compiled(_convnet_grouped, True), compiled(self._vmapped, True)

    def _forward(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def _vmapped(self, params, buffers, x, shared):
        return torch.vmap(self._forward, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    def __call__(self, x, shared=False, vmap=False):
        """Logits (N, B, K): network i on its own batch x[i] of x (N, B, C, H, W), or with `shared` every
        network on the one batch x (B, C, H, W). A ConvNet runs grouped (`_convnet_grouped`) unless `vmap`;
        any other architecture runs through torch.vmap over functional_call."""
        if self.grouped and not vmap:
            return self._run_grouped(self.base, self.params, x, shared)
        return self._run_vmap(self.params, self.buffers, x, shared)

    def train(self, mode=True):
        self.base.train(mode)

    @property
    def training(self):
        return self.base.training

    def state_dict(self):
        """The stacked tensors by state_dict name, each (N, ...); live references, copy before training on."""
        return {**{k: v.detach() for k, v in self.params.items()}, **self.buffers}

    def load_state_dict(self, state):
        """Copy stacked tensors (as `state_dict` returns them) into this model."""
        expected = set(self.params) | set(self.buffers)
        if set(state) != expected:
            raise ValueError(f"the stacked state names {sorted(set(state) ^ expected)} do not fit these networks")
        with torch.no_grad():
            for k, v in self.state_dict().items():
                if v.shape != state[k].shape:
                    raise ValueError(f"stacked state {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
                v.copy_(state[k])

    def unstack_into(self, models):
        """Load network i's slice into models[i] (ordinary modules again, parameters updated in place)."""
        stacked = self.state_dict()
        for i, m in enumerate(models):
            m.load_state_dict({k: v[i] for k, v in stacked.items()})


@torch.no_grad()
def test_accuracy_many(models, split, mean, std, device, batch_size=None, precision="fp32"):
    """Top-1 accuracy (%) of each network on a split, in eval mode: a list, one per network.

    `models` is a StackedNetworks or a list of modules (stacked here). Each test batch is read and
    normalised once and fed to all networks (vmap with the input not batched).
    """
    net = models if isinstance(models, StackedNetworks) else StackedNetworks(models, device)
    if batch_size is None and torch.device(device).type != "cpu":
        batch_size = max(1, 1024 // net.n)  # N networks per image: keep test_accuracy's work per batch
    was_training = net.training
    net.train(False)
    correct = torch.zeros(net.n, dtype=torch.long, device=device)
    for x, y in test_batches(split, device, batch_size):
        with autocast(device, precision):
            correct += (net(normalize(x, mean, std), shared=True).argmax(2) == y).sum(1)
    net.train(was_training)
    return [100.0 * c / max(len(split.labels), 1) for c in correct.tolist()]


def train_epoch_many(net, optimizer, images, labels, mean, std, recipe, device):
    """One shuffled pass of every network; returns per-network mean train loss and accuracy (lists).

    The draws, per network and batch, are those of training.recipe.train_epoch (see the module's contract).
    """
    n = net.n
    net.train()
    count = len(labels)
    index_device = images.device if torch.is_tensor(images) else torch.device("cpu")
    # Each network's own data order, drawn as epoch_batches draws one.
    perms = torch.stack([torch.randperm(count, device=index_device) for _ in range(n)])
    total_loss = torch.zeros(n, device=device)
    correct = torch.zeros(n, dtype=torch.long, device=device)
    seen = 0
    for start in range(0, count, recipe.batch_size):
        index = perms[:, start:start + recipe.batch_size]
        b = index.shape[1]
        x = gather(images, index.reshape(-1), device)
        y = labels[index.to(labels.device)]
        with torch.no_grad():
            if recipe.pixel_aug is not None:
                x = recipe.pixel_aug(x)
            x = recipe.dsa(normalize(x, mean, std))  # one call: per-sample draws over all N x B images
        x = x.view(n, b, *x.shape[1:])
        # Decisions on the host from the CPU generator, compared in double as train_epoch compares them.
        mix = [r < recipe.mix_p for r in torch.rand(n).tolist()] if recipe.mix_p > 0 else [False] * n
        if any(mix):
            perm, boxes, ratio = cutmix_draws(mix, b, x.shape[-2], x.shape[-1], recipe.beta)
            # Two host-to-device copies per mixed step: the indices, then the loss weights (1 - ratio in double).
            plan = torch.cat([perm, boxes], 1).to(device)
            ratio, rest = torch.stack([ratio, 1.0 - ratio]).to(device, torch.float32)
            x, y_b = cutmix_many(x, y, plan[:, :b], plan[:, b:])
        with recipe.autocast(device):
            logits = net(x)
            if recipe.teacher is not None:  # train_epoch's soft labels: the teacher on every network's batch
                targets = teacher_logits(recipe.teacher, x.flatten(0, 1)).view(n, b, -1)
                losses = soft_label_loss(logits, targets, recipe.temperature)
            elif any(mix):
                losses = cutmix_loss_many(logits, y, y_b, ratio, rest)
            else:
                losses = cross_entropy_many(logits, y)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        total_loss += losses.detach() * b
        correct += (logits.argmax(2) == y).sum(1)
        seen += b
    return [t / seen for t in total_loss.tolist()], [100.0 * c / seen for c in correct.tolist()]


def fit_many(models, images, labels, test, mean, std, recipe, device, progress=None, start=None, on_epoch=None):
    """Train the networks in `models` at once with `recipe`; per network, fit's {'final', 'best', 'history'}.

    The networks must share one architecture that `can_vectorise` accepts. At the end each models[i] holds
    its trained weights. `progress(epoch, losses, accs)` gets per-network train loss and accuracy lists after
    every epoch; `on_epoch(state)` gets the training state (stacked weights, optimizer, schedule, histories,
    random streams; only types torch.load(weights_only=True) reads, tensors live: save or copy them before
    returning), and passing it back as `start` continues that training exactly.
    """
    net = StackedNetworks(models, device)
    if recipe.compile:
        net.compile()
    labels = labels.to(device)
    optimizer = torch.optim.SGD(list(net.params.values()), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(recipe.epochs), gamma=0.2)
    histories, first = [[] for _ in range(net.n)], 1
    if start is not None:
        if len(start["history"]) != net.n:
            raise ValueError(f"the start state holds {len(start['history'])} networks, not {net.n}")
        net.load_state_dict(start["stacked"])
        optimizer.load_state_dict(start["optimizer"])
        scheduler.load_state_dict(start["scheduler"])
        histories = [[tuple(h) for h in history] for history in start["history"]]
        first = start["epoch"] + 1
        set_rng_state(start["rng"])
    for epoch in range(first, recipe.epochs + 1):
        losses, train_accs = train_epoch_many(net, optimizer, images, labels, mean, std, recipe, device)
        scheduler.step()
        if epoch == recipe.epochs or (recipe.eval_interval and epoch % recipe.eval_interval == 0):
            accs = test_accuracy_many(net, test, mean, std, device, precision=recipe.precision)
            for history, acc in zip(histories, accs):
                history.append((epoch, acc))
        if progress:
            progress(epoch, losses, train_accs)
        if on_epoch:
            on_epoch({"epoch": epoch, "stacked": net.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(),
                      "history": [[list(h) for h in history] for history in histories], "rng": rng_state()})
    net.unstack_into(models)
    return [{"final": h[-1][1], "best": max(a for _, a in h), "history": h} for h in histories]


def fit_group(models, images, labels, test, mean, std, recipe, device, progress=None, start=None, on_epoch=None):
    """Train a group from `groups_of`: one network with training.recipe.fit (the reference), several with fit_many.
    Either way a list of fit's results, and `progress(epoch, losses, accs)` gets lists, one entry per network."""
    if len(models) > 1:
        return fit_many(models, images, labels, test, mean, std, recipe, device, progress, start, on_epoch)
    listed = None if progress is None else (lambda epoch, loss, acc: progress(epoch, [loss], [acc]))
    return [fit(models[0], images, labels, test, mean, std, recipe, device, progress=listed, start=start,
                on_epoch=on_epoch)]


def test_accuracies(models, split, mean, std, device, precision="fp32"):
    """Each network's test accuracy: training.recipe.test_accuracy for one, test_accuracy_many for several."""
    if len(models) > 1:
        return test_accuracy_many(models, split, mean, std, device, precision=precision)
    return [test_accuracy(models[0], split, mean, std, device, precision=precision)]


def build_networks(network, device, indices, seed):
    """The networks of `indices` (evaluation runs or experts), network i initialised under seed * 1000 + i; the
    random streams are left where the first one's initialisation leaves them (what it would train with alone)."""
    models, after_first = [], None
    for index in indices:
        seed_everything(seed * 1000 + index)
        models.append(make_network(network, device))
        if after_first is None:
            after_first = rng_state()
    set_rng_state(after_first)
    return models


# --parallel 0 on the CPU groups only ConvNets this narrow: 32 channels (digits' width 0.25) ran grouped as fast as
# one after another at IPC 10 and faster at IPC 1; 128 channels (width 1) ran 1.2x slower grouped (bench/speed.py).
CPU_GROUP_CHANNELS = 32


def group_size(parallel, model, device, count):
    """How many of `count` networks like `model` train at once: `parallel` (1: one after another), or for 0 all
    of them where that pays: on an accelerator every network `can_vectorise` takes, on the CPU a grouped ConvNet
    of at most CPU_GROUP_CHANNELS channels. Networks `can_vectorise` refuses always train one by one."""
    if not can_vectorise(model):
        return 1
    if parallel:
        return parallel
    if torch.device(device).type != "cpu":
        return max(count, 1)
    narrow = _groupable(model) and model.layers["conv"][0].out_channels <= CPU_GROUP_CHANNELS
    return max(count, 1) if narrow else 1


def groups_of(indices, size):
    """Indices split into consecutive groups of `size` (the last one shorter)."""
    return [indices[i:i + size] for i in range(0, len(indices), size)]
