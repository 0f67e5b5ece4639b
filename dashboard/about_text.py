"""The About page's text: the lecture notes' five ways to train, each with its key lines.

The lecture is the PyTorch notes Liveprop is built from (seed/pytorch-lecture-notes.txt). The
paragraph under each heading is the engine's own docstring for that mode (engine/modes/), so the
page and the code say the same thing.
"""
from engine.modes import autograd, custom_function, manual, nn_optim, nn_sgd

INTRO = """
Liveprop trains the networks of a PyTorch lecture while you watch. The lecture fits the same
two-layer net five times, each time letting PyTorch do a little more of the work:
`N, D_in, H, D_out = 64, 1000, 100, 10`, random `x` and `y`, 500 steps. Pick one of the five
**modes** in the sidebar, press **Start**, and the loss, the weight and gradient histograms and the
per-layer signals update live. **Compare modes** runs manual, autograd and custom Function from the
same seed: their curves lie on top of each other, and the gradient check shows how far the
hand-written gradients are from autograd's.
"""


def _doc(module) -> str:
    first, _, rest = module.__doc__.strip().partition("\n")
    return f"*{first}*\n\n{' '.join(rest.split())}"


MODES = [
    ("manual: gradients by hand", """\
h = x.mm(w1)
h_relu = h.clamp(min=0)
y_pred = h_relu.mm(w2)
loss = (y_pred - y).pow(2).sum()
grad_y_pred = 2.0 * (y_pred - y)
grad_w2 = h_relu.t().mm(grad_y_pred)
grad_h = grad_y_pred.mm(w2.t()).masked_fill(h < 0, 0)   # the lecture: grad_h[h < 0] = 0
grad_w1 = x.t().mm(grad_h)
w1 -= learning_rate * grad_w1
w2 -= learning_rate * grad_w2""", _doc(manual)),
    ("autograd: PyTorch tracks the graph", """\
w1 = torch.randn(D_in, H, requires_grad=True)
loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
loss.backward()                 # d loss / d w for every requires_grad tensor
with torch.no_grad():
    w1 -= learning_rate * w1.grad
    w1.grad.zero_()             # gradients accumulate otherwise""", _doc(autograd)),
    ("custom Function: your own backward", """\
class MyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_y):
        x, = ctx.saved_tensors
        return grad_y.masked_fill(x < 0, 0)""", _doc(custom_function)),
    ("nn: a torch.nn model", """\
model = torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Linear(H, D_out))
loss = torch.nn.functional.mse_loss(model(x), y)
loss.backward()
with torch.no_grad():
    for param in model.parameters():
        param -= learning_rate * param.grad
model.zero_grad()""", _doc(nn_sgd)),
    ("nn + optim: an optimizer does the update", """\
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)   # the lecture prefers Adam
loss = torch.nn.functional.mse_loss(model(x), y)
loss.backward()
optimizer.step()
optimizer.zero_grad()""", _doc(nn_optim)),
]

OUTRO = """
### Beyond the five loops
- **Architectures**: the lecture's `ParallelBlock` network (two Linear maps multiplied, then ReLU),
  an MLP of any depth, a small CNN, and torchvision models such as ResNet for fine-tuning: load
  pretrained weights from a file, freeze the backbone, replace the head.
- **Data** goes through a `Dataset` and a `DataLoader` (batch size, shuffle, workers, sampler): the
  lecture's random tensors, a teacher network, scikit-learn's digits, your CSV or an image folder.
- **Visualisation**: this page, and a Visdom server for remote viewing (the lecture mentions Visdom
  and tensorboardX).
- **Dynamic computation graph**: PyTorch builds the graph anew at every iteration. The
  *Computation graph* page draws it for the configuration in the sidebar.
- **Learning rates**: the raw loops use sum-of-squares loss and `torch.randn` weights, hence the
  lecture's tiny 1e-6; the nn loops use mean-squared error and 1e-2, Adam 1e-4. Changing the mode
  sets the lecture's rate for it.
"""
