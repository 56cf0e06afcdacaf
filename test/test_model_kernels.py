"""The model's fast kernels against their textbook formulation (issue 13: the same method, doing less work).

coupled_convex drops the |v|^2 term (the same for every candidate, so it cancels in the softmax) and works in
voxel chunks; adam_refine samples the moving features only where the similarity weight is positive. Each is
compared here with the plain formula on small random problems."""
import torch

from model.discrete import coupled_convex, displacement_set, shifted_stack
from model.config import RefineSettings
from model.refine import adam_refine
from model.warp import apply_affine, identity_mm, sample, smooth


def textbook_coupled_convex(cost, disp_mm, spacing, lambdas, sigma, temperature, conf):
    k, d, h, w = cost.shape
    c = cost.reshape(k, -1)
    cw = conf.reshape(-1)
    c = c / ((c.mean(0) * cw).sum() / cw.sum()).clamp_min(1e-8)
    sp = torch.tensor(spacing)
    dv = disp_mm / sp
    v = torch.zeros(3, d * h * w)
    conf = conf.clamp_min(1e-3)
    for lam in lambdas:
        distance = ((dv[:, :, None] - v[None]) ** 2).sum(1)  # (K, N) |d_k - v(x)|^2
        p = torch.softmax(-(c + lam * distance) / temperature, 0)
        u = dv.t() @ p
        v = (smooth(u.reshape(3, d, h, w) * conf, sigma) / smooth(conf, sigma)).reshape(3, -1)
    return v.reshape(3, d, h, w) * sp.view(3, 1, 1, 1)


def test_coupled_convex_matches_the_textbook_formula_in_any_chunking():
    torch.manual_seed(0)
    spacing = (2.0, 1.5, 1.0)
    _, disp_mm = displacement_set(2, spacing, "cpu")
    cost = torch.rand(disp_mm.shape[0], 9, 10, 11) ** 2
    conf = (torch.rand(1, 9, 10, 11) > 0.3).float()
    args = (disp_mm, spacing, [0.0, 0.025, 0.12, 0.35], 1.5, 0.05, conf)
    expected = textbook_coupled_convex(cost, *args)
    assert float(expected.abs().max()) > 0.1  # a real field, not all zeros
    for chunk in (7, 64, 4096):
        assert torch.allclose(coupled_convex(cost, *args, chunk=chunk), expected, atol=2e-5)


def test_shifted_stack_reads_each_offset_with_a_replicate_border():
    vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    offsets, _ = displacement_set(1, (1.0, 1.0, 1.0), "cpu")
    stack = shifted_stack(vol, offsets)
    for k, (a, b, c) in enumerate(offsets.tolist()):
        for i, j, l in [(0, 0, 0), (3, 4, 5), (2, 1, 3)]:
            src = (min(max(i + a, 0), 3), min(max(j + b, 0), 4), min(max(l + c, 0), 5))
            assert stack[k, i, j, l] == vol[0][src]


def box3(p):
    """3x3x3 box mean, replicate border, as 1-D means over slices: autograd differentiates every slice."""
    for dim in (1, 2, 3):
        n = p.shape[dim]
        q = torch.cat([p.narrow(dim, 0, 1), p, p.narrow(dim, n - 1, 1)], dim)
        p = (q.narrow(dim, 0, n) + q.narrow(dim, 1, n) + q.narrow(dim, 2, n)) / 3.0
    return p


def _smooth_param(p, passes):
    for _ in range(passes):
        p = box3(p)
    return p


def textbook_adam_refine(ff, mf, w, spacing, A, u0, rcfg):
    """The refinement's loss over every voxel of the box (voxels with w = 0 contribute nothing), its gradient
    by autograd through every slice of the smoothing."""
    x = identity_mm(ff.shape[1:], spacing)
    sp = torch.tensor(spacing).view(3, 1, 1, 1)
    p = u0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=rcfg["lr"])
    wsum = w.sum().clamp_min(1.0)
    for it in range(rcfg["iterations"]):
        opt.zero_grad()
        u = _smooth_param(p, rcfg["smooth_passes"])
        data = ((ff - sample(mf, apply_affine(A, x + u), spacing)).pow(2).mean(0, keepdim=True) * w).sum() / wsum
        uv = u / sp
        reg = ((uv[:, 1:] - uv[:, :-1]).pow(2).sum() + (uv[:, :, 1:] - uv[:, :, :-1]).pow(2).sum()
               + (uv[:, :, :, 1:] - uv[:, :, :, :-1]).pow(2).sum()) / (3 * wsum)
        (data + rcfg["diffusion_weight"] * reg).backward()
        if it == 0:
            g_rms = p.grad.pow(2).sum(0, keepdim=True)[w > 0].mean().sqrt()
            opt.param_groups[0]["eps"] = float(rcfg["adam_eps_rel"] * g_rms) + 1e-20
        opt.step()
    return _smooth_param(p, rcfg["smooth_passes"]).detach()


def test_adam_refine_on_the_fan_only_matches_the_whole_box_loss():
    torch.manual_seed(1)
    shape, spacing = (10, 11, 12), (2.0, 2.0, 1.5)
    ff, mf = torch.rand((4,) + shape), torch.rand((4,) + shape)
    w = (torch.rand((1,) + shape) > 0.5).float() * torch.rand((1,) + shape)
    A = torch.eye(4)
    A[:3, 3] = torch.tensor([0.5, -0.3, 0.2])
    u0 = 0.5 * torch.randn((3,) + shape)
    rcfg = dict(iterations=5, lr=0.3, adam_eps_rel=0.01, diffusion_weight=0.25, smooth_passes=2)
    settings = RefineSettings(enabled=True, level_mm=2.0, **rcfg)
    with torch.enable_grad():
        expected = textbook_adam_refine(ff, mf, w, spacing, A, u0, rcfg)
        got = adam_refine(ff, mf, w, spacing, A, u0, settings)
    assert float((expected - u0).abs().max()) > 0.1  # it moved
    assert torch.allclose(got, expected, atol=1e-4)


def test_jacobian_of_a_linear_map_is_its_determinant_in_either_channel_order():
    from model.warp import jacobian_det_vox, min_jacobian_vox
    torch.manual_seed(2)
    matrix = torch.eye(3) + 0.3 * torch.randn(3, 3)
    x = identity_mm((7, 8, 9), (1.0, 1.0, 1.0))
    u = torch.einsum("cd,d...->c...", matrix - torch.eye(3), x)
    expected = float(torch.linalg.det(matrix))
    assert abs(expected - 1.0) > 0.05
    assert torch.allclose(jacobian_det_vox(u), torch.full((7, 8, 9), expected), atol=1e-4)
    assert abs(min_jacobian_vox(u, chunk=3) - expected) < 1e-4
    # the writer's (3, k, j, i) block: spatial axes reversed, component c still along index axis c
    writer_block = u.permute(0, 3, 2, 1)
    assert abs(min_jacobian_vox(writer_block, chunk=4, channels_reversed=True) - expected) < 1e-4



def test_box_mean_is_the_replicate_padded_average_pool():
    import torch.nn.functional as F
    from model.warp import box_mean
    torch.manual_seed(4)
    x = torch.rand(3, 6, 7, 8)
    for radius in (1, 2):
        k = 2 * radius + 1
        expected = F.avg_pool3d(F.pad(x.unsqueeze(0), [radius] * 6, mode="replicate"), k, 1)[0]
        assert torch.allclose(box_mean(x, radius), expected, atol=1e-6)
    assert box_mean(x, 0) is x


def test_smooth_is_the_replicate_padded_separable_gaussian_convolution():
    import torch.nn.functional as F
    from model.warp import gaussian_kernel1d, smooth
    torch.manual_seed(5)
    x = torch.rand(2, 9, 10, 11)
    for sigma in (0.5, 1.5, 2.0):
        k = gaussian_kernel1d(sigma)
        r = (k.numel() - 1) // 2
        y = x.unsqueeze(0)
        for axis in range(3):  # the textbook form: a depthwise 1-D convolution per axis
            shape = [1, 1, 1]
            shape[axis] = k.numel()
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
            y = F.conv3d(F.pad(y, pad, mode="replicate"), k.view(1, 1, *shape).repeat(2, 1, 1, 1, 1), groups=2)
        assert torch.allclose(smooth(x, sigma), y[0], atol=1e-6)
    assert smooth(x, 0) is x
