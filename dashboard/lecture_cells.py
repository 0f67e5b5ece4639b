"""The lecture's own cells, one per training mode, as the lecture notes print them (Chinese comments
included): the Code panel shows each beside the engine's code for the same step. Copied from
seed/pytorch-lecture-notes.txt (trailing spaces trimmed); tests/test_dashboard_code.py checks the
copy against the notes where they are at hand."""

CELLS = {
    "manual": (
        "In [16]",
        """\
import torch

device = torch.device('cuda')

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)
w1 = torch.randn(D_in, H, device=device)
w2 = torch.randn(H, D_out, device=device)

learning_rate = 1e-6
for t in range(500):
    # Forward pass:compute predictions and loss
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred-y).pow(2).sum()  # L2（均方）损失函数

    # Backward pass: manually compute gradients 反向传播的计算过程再复习复习
    grad_y_pred = 2.0 * (y_pred-y)  # y_pred对loss求导
    grad_w2 = h_relu.t().mm(grad_y_pred)  # t()为转置
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h<0] = 0
    grad_w1 = x.t().mm(grad_h)

    w1 -= learning_rate * grad_w1
    w2 -= learning_rate * grad_w2""",
    ),
    "autograd": (
        "In [19]",
        """\
import torch

device = torch.device('cuda')

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)
w1 = torch.randn(D_in, H, device=device, requires_grad = True)
w2 = torch.randn(H, D_out, device=device, requires_grad = True)

learning_rate = 1e-6
for t in range(5):
    # PyTorch keeps track of them in the graph
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred-y).pow(2).sum()

    loss.backward()  # 求得loss相对于requires_grad = True的参数的偏导

    with torch.no_grad():  # 下列代码的计算过程不在计算图中
        w1 -= learning_rate * w1.grad
        w2 -= learning_rate * w2.grad
        w1.grad.zero_()  # 不置零的话grad会累加
        w2.grad.zero_()  # 下划线意味着原地操作，直接改变w2，而不是返回计算结果""",
    ),
    "custom_function": (
        "In [23]",
        """\
import torch


class MyReLU(torch.autograd.Function):  # 继承自Function类
    @staticmethod  # 输入Variable，中间计算tensor，输出Variable
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min = 0)

    @staticmethod  # 均使用Variable
    def backward(ctx, grad_y):
        x, = ctx.saved_tensors  # 读取参数
        grad_input = grad_y.clone()
        grad_input[x<0] = 0
        return grad_input

def my_relu(x):
    return MyReLU.apply(x)  # Function父类中的apply函数


device = torch.device('cuda')

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)
w1 = torch.randn(D_in, H, device=device, requires_grad = True)
w2 = torch.randn(H, D_out, device=device, requires_grad = True)

learning_rate = 1e-6
for t in range(5):
    h = x.mm(w1)
    h_relu = my_relu(h)  # 使用自定义autograd function
    y_pred = h_relu.mm(w2)
    loss = (y_pred-y).pow(2).sum()

    loss.backward()

    with torch.no_grad():
        w1 -= learning_rate * w1.grad
        w2 -= learning_rate * w2.grad
        w1.grad.zero_()
        w2.grad.zero_()""",
    ),
    "nn": (
        "In [29]",
        """\
import torch

device = torch.device('cuda')

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)

model = torch.nn.Sequential(
        torch.nn.Linear(D_in, H),
        torch.nn.ReLU(),
        torch.nn.Linear(H, D_out))
model.to(device)

learning_rate = 1e-2
for t in range(5):
    y_pred = model(x)  # 整个forward不用手工计算了，直接用torch.nn中封装好的函数，learnable weight在model中`
    loss = torch.nn.functional.mse_loss(y_pred, y)  # loss也使用封装好的

    loss.backward()

    with torch.no_grad():
        for param in model.parameters():  # 遍历torch.nn构建的model的参数
            param -= learning_rate * param.grad
    model.zero_grad()   # 梯度置零""",
    ),
    "optim": (
        "In [30]",
        """\
import torch

device = torch.device('cuda')

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)

model = torch.nn.Sequential(
        torch.nn.Linear(D_in, H),
        torch.nn.ReLU(),
        torch.nn.Linear(H, D_out))
model.to(device)
learning_rate = 1e-4

# 一般优先使用Adam
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

for t in range(5):
    y_pred = model(x)
    loss = torch.nn.functional.mse_loss(y_pred, y)

    loss.backward()

    optimizer.step()  # 更新参数
    optimizer.zero_grad()  # 梯度置0，等价于model.zero_grad()""",
    ),
}
