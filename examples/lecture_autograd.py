"""The lecture's autograd cell (In [19] of the lecture notes), watched by Liveprop: the three added lines end in
`# liveprop`, and the device falls back to the CPU where there is no CUDA. Run it, then open the link it prints
(`make run` serves the dashboard): the loss and the histograms of w1 and w2, with Pause and Stop."""

import torch

import liveprop  # liveprop

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device)
y = torch.randn(N, D_out, device=device)
w1 = torch.randn(D_in, H, device=device, requires_grad=True)
w2 = torch.randn(H, D_out, device=device, requires_grad=True)
run = liveprop.watch({"w1": w1, "w2": w2}, name="lecture autograd")  # liveprop

learning_rate = 1e-6
for t in range(5):
    # PyTorch keeps track of them in the graph
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred - y).pow(2).sum()

    loss.backward()  # 求得loss相对于requires_grad = True的参数的偏导

    with torch.no_grad():  # 下列代码的计算过程不在计算图中
        w1 -= learning_rate * w1.grad
        w2 -= learning_rate * w2.grad
        w1.grad.zero_()  # 不置零的话grad会累加
        w2.grad.zero_()  # 下划线意味着原地操作，直接改变w2，而不是返回计算结果
    run.step(loss)  # liveprop
