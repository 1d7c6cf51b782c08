"""Random draws keyed by what they are for: a pure function of (seed, purpose, numbers), not of what ran before.

Condensation draws every random number through these keys (the expert k and lam of iteration t, the real
batches of class c's pass p, the DSA parameters and synthetic subsets of call j of iteration t), so a class's
draws do not depend on which other classes share its process, and a run resumes from its iteration number
alone. Per-class values come from one table drawn for all classes of the dataset, row c for class c, so every
process draws the same table whatever classes it owns.
"""
import torch

MASK64 = (1 << 64) - 1
PURPOSES = {"encoder": 1, "real": 2, "call": 3, "noise": 4, "network": 5, "frequencies": 6, "sampler": 7}


def _splitmix64(x):
    """One step of SplitMix64 (Steele et al. 2014): a bijection of 64-bit ints with full avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def key(seed, purpose, *numbers):
    """A 64-bit key of (seed, purpose, numbers...): every part is absorbed by a SplitMix64 step."""
    h = _splitmix64(int(seed) & MASK64)
    for part in (PURPOSES[purpose], *numbers):
        h = _splitmix64(h ^ (int(part) & MASK64))
    return h


def host_uniform(seed, purpose, *numbers):
    """A float in [0, 1) on the host (no device involved), from the key's top 53 bits."""
    return (key(seed, purpose, *numbers) >> 11) / float(1 << 53)


class KeyedGenerator:
    """One torch.Generator on `device`, reseeded from a key for each draw (no state worth saving)."""

    def __init__(self, seed, device):
        self.seed = seed
        self.generator = torch.Generator(device=torch.device(device))

    def __call__(self, purpose, *numbers):
        """The generator seeded for (purpose, numbers); use it before asking for the next one."""
        # the CPU generator (mt19937) takes 32 bits of the seed; the top bits hold the most mixed ones
        seed = key(self.seed, purpose, *numbers)
        self.generator.manual_seed(seed >> 32 if self.generator.device.type == "cpu" else seed >> 1)
        return self.generator


class IterationDraws:
    """The draws of one condensation iteration: call j of iteration t gets its own key (seed, t, j).

    Every process runs the same calls in the same order (one per DSA application and per synthetic subset), so
    call j means the same thing everywhere. `table(columns)` is a (nclass, columns) uniform table for the next
    call, row c for class c; `choice(n)` a host-side integer in [0, n) for the same call.
    """

    def __init__(self, seed, nclass, device):
        self.nclass, self.device = nclass, torch.device(device)
        self.generators = KeyedGenerator(seed, device)
        self.seed, self.iteration, self.calls = seed, 0, 0

    def start(self, iteration):
        self.iteration, self.calls = iteration, 0

    def next_call(self):
        self.calls += 1
        return self.calls

    def table(self, columns, call):
        """Uniform [0, 1) values (nclass, columns) of `call` (the same table on every process)."""
        g = self.generators("call", self.iteration, call)
        return torch.rand(self.nclass, columns, generator=g, device=self.device)

    def normal(self, rows, columns, purpose, *numbers):
        """Standard normal values (rows, columns) keyed by (purpose, this iteration, numbers), e.g. a class's
        frequencies: the same on every process."""
        g = self.generators(purpose, self.iteration, *numbers)
        return torch.randn(rows, columns, generator=g, device=self.device)

    def choice(self, n, call):
        """An integer in [0, n) of `call`, drawn on the host."""
        return min(int(host_uniform(self.seed, "call", self.iteration, call, -1) * n), n - 1)
