"""A character-level GPT written as a PyTorch user writes one; it runs on PyTorch or on microtensor.

    python examples/char_gpt.py [--steps 200] [--tokens 200]   # microtensor
    EXAMPLES_BACKEND=torch python examples/char_gpt.py          # the same program on PyTorch

Only the import lines below differ between the two: one module per attention
head with a causal `tril` buffer, pre-LayerNorm blocks, `_init_weights` through
`apply`, AdamW with decay and no-decay parameter groups, a `DataLoader` over
(x, y) windows of a small built-in text, and top-k sampling with `multinomial`.
"""

import argparse
import os
from dataclasses import dataclass

BACKEND = os.environ.get("EXAMPLES_BACKEND", "microtensor")
if BACKEND == "torch":
    import torch
    import torch.nn as nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, Dataset
else:
    import microtensor as torch
    import microtensor.nn as nn
    from microtensor.nn import functional as F
    from microtensor.utils.data import DataLoader, Dataset

TEXT = """\
A tensor is an array that remembers where it came from. Every operation on it
records a small node: the inputs it read, and how to send a gradient back to them.
When the loss is computed, one call walks the graph backwards, from the last node
to the first, and each node hands its inputs their share of the gradient.
The optimizer then nudges every parameter a little way downhill, and the graph
is thrown away; the next batch builds a new one. A language model is nothing more
than this loop run many times: read a window of characters, guess each next one,
measure the surprise, and push the weights so that the surprise is smaller.
Attention lets every position look back at the positions before it, weigh them,
and mix what it finds; the mask keeps it from peeking at the future. Stack a few
such blocks, each with a small feed-forward network, and the model learns the
spelling of words, then their order, then a little of their sense.
"""


@dataclass
class GPTConfig:
    vocab_size: int = 64
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True


class CharDataset(Dataset):
    """Every window of block_size characters with the window shifted by one as its target."""

    def __init__(self, text, block_size):
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.itos = {i: ch for i, ch in enumerate(self.chars)}
        self.data = torch.tensor([self.stoi[ch] for ch in text], dtype=torch.long)
        self.block_size = block_size

    def __len__(self):
        return len(self.data) - self.block_size

    def __getitem__(self, idx):
        chunk = self.data[idx : idx + self.block_size + 1]
        return chunk[:-1], chunk[1:]

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)


class Head(nn.Module):
    """One head of causal self-attention."""

    def __init__(self, config, head_size):
        super().__init__()
        self.key = nn.Linear(config.n_embd, head_size, bias=False)
        self.query = nn.Linear(config.n_embd, head_size, bias=False)
        self.value = nn.Linear(config.n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)
        q = self.query(x)
        wei = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        return wei @ self.value(x)


class MultiHeadAttention(nn.Module):
    """Heads side by side, concatenated and projected back to n_embd."""

    def __init__(self, config):
        super().__init__()
        head_size = config.n_embd // config.n_head
        self.heads = nn.ModuleList([Head(config, head_size) for _ in range(config.n_head)])
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.dropout(self.proj(out))


class FeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Pre-LN transformer block: attention then feed-forward, each on a residual path."""

    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = MultiHeadAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.ffwd = FeedForward(config)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.drop(self.token_embedding(idx) + self.position_embedding(pos))
        x = self.ln_f(self.blocks(x))
        logits = self.lm_head(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def configure_optimizer(model, lr, weight_decay, betas=(0.9, 0.95)):
    """AdamW decaying the matrices (dim >= 2) and not the biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def train_step(model, optimizer, x, y, grad_clip=1.0):
    _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def train(model, optimizer, loader, steps, device="cpu"):
    """`steps` optimizer steps over the loader (restarted when it runs out); returns the losses."""
    model.train()
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            losses.append(train_step(model, optimizer, x.to(device), y.to(device)))
            if len(losses) == steps:
                break
    return losses


def main(steps=200, tokens=200, batch_size=32, seed=1337):
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = GPTConfig(block_size=32, n_layer=2)
    dataset = CharDataset(TEXT, config.block_size)
    config.vocab_size = len(dataset.chars)
    model = GPT(config).to(device)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e3:.1f}k parameters")
    optimizer = configure_optimizer(model, lr=3e-3, weight_decay=0.1)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    losses = train(model, optimizer, loader, steps, device)
    for step in range(0, steps, max(1, steps // 5)):
        print(f"step {step:4d}  loss {losses[step]:.4f}")
    print(f"final loss {losses[-1]:.4f}")
    model.eval()
    context = torch.tensor([[dataset.stoi["A"]]], dtype=torch.long, device=device)
    print(dataset.decode(model.generate(context, tokens, temperature=0.8, top_k=10)[0].tolist()))
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200, help="length of the sample printed at the end")
    args = parser.parse_args()
    main(args.steps, args.tokens)
