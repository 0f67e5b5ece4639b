"""The lecture's five ways to train, one file each, with the same names and the same structure.

Every mode implements Mode (protocol.py): forward_backward(x, y) -> loss, update(), zero_grad(),
named_params(), named_grads(), the lr, the loss's name, optimizer and model, reference_grads(x, y) for the
gradient check (or None), state_dict() and load_weights(). The trainer calls them in that order; the modes know nothing
about telemetry.

The raw modes (manual, autograd, custom_function) each hold the lecture's step with its names
(TwoLayer) and the same step looped over any number of layers (Deep, with deep.py); their Mode
picks TwoLayer for exactly two layers. What they share besides the step is in raw.py, so a diff of
two mode files shows only what the later one adds.
"""

from engine.modes import autograd, custom_function, manual, nn_optim, nn_sgd

MODES = {
    "manual": manual.Mode,
    "autograd": autograd.Mode,
    "custom_function": custom_function.Mode,
    "nn": nn_sgd.Mode,
    "optim": nn_optim.Mode,
}
