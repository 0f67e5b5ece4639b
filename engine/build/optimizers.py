"""Optimizers for the optim mode: a plain dict from name to constructor, each with its usual knobs."""

import torch


def _betas(c):
    return (c.beta1, c.beta2)


OPTIMIZERS = {
    "sgd": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
    ),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=_betas(c), eps=c.eps, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=_betas(c), eps=c.eps, weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(
        p, lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum, weight_decay=c.weight_decay
    ),
    "adagrad": lambda p, c: torch.optim.Adagrad(p, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay),
}


def build(params, cfg):
    return OPTIMIZERS[cfg.optimizer](params, cfg)
