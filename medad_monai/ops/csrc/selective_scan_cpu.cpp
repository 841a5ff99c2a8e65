// Fused CPU selective scan (the S6 recurrence of Mamba): forward and backward, one pass per
// (batch, channel) sequence, its N states kept in registers. See medad_monai/ops/selective_scan.py
// ("cpu" backend) for where it sits; the arguments are prepared there.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

// Shapes: u, dt (B, D, L) with dt already softplus'd; A (D, N); Bs, Cs (Bb, G, Lb, N) with Bb in
// {1, B} (shared over the batch or not), Lb in {1, L} (shared over time or not) and channel d
// reading group d / (D / G). forward returns the scan's y (B, D, L) (before the skip term and the
// gate) and the last state (B, D, N).
template <typename scalar_t>
void forward_kernel(const scalar_t* u, const scalar_t* dt, const scalar_t* A, const scalar_t* Bs, const scalar_t* Cs,
                    scalar_t* y, scalar_t* last, int64_t batch, int64_t dim, int64_t length, int64_t n_state,
                    int64_t groups, int64_t b_batch, int64_t b_length) {
  const int64_t per_group = dim / groups, time_stride = b_length == 1 ? 0 : n_state;
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> h(n_state);
    for (int64_t bd = begin; bd < end; ++bd) {
      const int64_t b = bd / dim, d = bd % dim, g = d / per_group;
      const scalar_t* a = A + d * n_state;
      const scalar_t* bs = Bs + ((b_batch == 1 ? 0 : b) * groups + g) * b_length * n_state;
      const scalar_t* cs = Cs + ((b_batch == 1 ? 0 : b) * groups + g) * b_length * n_state;
      const scalar_t* ub = u + bd * length;
      const scalar_t* tb = dt + bd * length;
      scalar_t* yb = y + bd * length;
      std::fill(h.begin(), h.end(), scalar_t(0));
      scalar_t* hp = h.data();
      for (int64_t t = 0; t < length; ++t) {
        const scalar_t step = tb[t], x = step * ub[t];
        const scalar_t* bt = bs + t * time_stride;
        const scalar_t* ct = cs + t * time_stride;
        scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < n_state; ++n) {
          hp[n] = std::exp(step * a[n]) * hp[n] + x * bt[n];
          acc += ct[n] * hp[n];
        }
        yb[t] = acc;
      }
      std::copy(h.begin(), h.end(), last + bd * n_state);
    }
  });
}

// Gradients of y = scan(...) given dy (B, D, L) and dlast (B, D, N): d_u, d_dt (B, D, L), dA (D, N),
// dBs, dCs (Bb, G, L, N). Each sequence's states are recomputed into a per-task buffer, then the
// adjoint g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1} runs backwards. dA, dBs and dCs are summed over
// channels (and over the batch when Bb = 1) in per-chunk-of-work buffers, added up at the end.
template <typename scalar_t>
void backward_kernel(const scalar_t* u, const scalar_t* dt, const scalar_t* A, const scalar_t* Bs, const scalar_t* Cs,
                     const scalar_t* dy, const scalar_t* dlast, scalar_t* du, scalar_t* ddt, scalar_t* dA,
                     scalar_t* dBs, scalar_t* dCs, int64_t batch, int64_t dim, int64_t length, int64_t n_state,
                     int64_t groups, int64_t b_batch, int64_t b_length) {
  const int64_t per_group = dim / groups, time_stride = b_length == 1 ? 0 : n_state;
  const int64_t bc_size = b_batch * groups * b_length * n_state;
  const int64_t work = batch * dim;
  // one accumulator set per task: tasks are contiguous ranges of (b, d), at most the thread count
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work));
  const int64_t grain = (work + tasks - 1) / tasks;
  std::vector<std::vector<scalar_t>> accA(tasks, std::vector<scalar_t>(dim * n_state, 0));
  std::vector<std::vector<scalar_t>> accB(tasks, std::vector<scalar_t>(bc_size, 0));
  std::vector<std::vector<scalar_t>> accC(tasks, std::vector<scalar_t>(bc_size, 0));
  at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<scalar_t> states((length + 1) * n_state), g(n_state);
    for (int64_t task = task_begin; task < task_end; ++task) {
      scalar_t* tA = accA[task].data();
      scalar_t* tB = accB[task].data();
      scalar_t* tC = accC[task].data();
      for (int64_t bd = task * grain; bd < std::min(work, (task + 1) * grain); ++bd) {
        const int64_t b = bd / dim, d = bd % dim, grp = d / per_group;
        const int64_t bc_offset = ((b_batch == 1 ? 0 : b) * groups + grp) * b_length * n_state;
        const scalar_t* a = A + d * n_state;
        const scalar_t* bs = Bs + bc_offset;
        const scalar_t* cs = Cs + bc_offset;
        const scalar_t* ub = u + bd * length;
        const scalar_t* tb = dt + bd * length;
        const scalar_t* dyb = dy + bd * length;
        scalar_t* sp = states.data();  // row t + 1 holds h_t, row 0 the zero initial state
        std::fill(sp, sp + n_state, scalar_t(0));
        for (int64_t t = 0; t < length; ++t) {
          const scalar_t step = tb[t], x = step * ub[t];
          const scalar_t* bt = bs + t * time_stride;
          const scalar_t* prev = sp + t * n_state;
          scalar_t* cur = sp + (t + 1) * n_state;
#pragma omp simd
          for (int64_t n = 0; n < n_state; ++n) cur[n] = std::exp(step * a[n]) * prev[n] + x * bt[n];
        }
        scalar_t* gp = g.data();
        const scalar_t* dl = dlast + bd * n_state;
        for (int64_t n = 0; n < n_state; ++n) gp[n] = dl[n];
        scalar_t* dAd = tA + d * n_state;
        for (int64_t t = length - 1; t >= 0; --t) {
          const scalar_t step = tb[t], x = step * ub[t], dyt = dyb[t];
          const scalar_t* bt = bs + t * time_stride;
          const scalar_t* ct = cs + t * time_stride;
          const scalar_t* prev = sp + t * n_state;
          const scalar_t* cur = sp + (t + 1) * n_state;
          scalar_t* dbt = tB + bc_offset + t * time_stride;
          scalar_t* dct = tC + bc_offset + t * time_stride;
          scalar_t dx = 0, dstep = 0;
#pragma omp simd reduction(+ : dx, dstep)
          for (int64_t n = 0; n < n_state; ++n) {
            const scalar_t decay = std::exp(step * a[n]);
            const scalar_t gn = gp[n] + ct[n] * dyt;  // dL/dh_t
            dct[n] += dyt * cur[n];
            dbt[n] += gn * x;
            dx += gn * bt[n];
            const scalar_t dlog = gn * prev[n] * decay;  // dL/d(dt_t A_n)
            dstep += dlog * a[n];
            dAd[n] += dlog * step;
            gp[n] = gn * decay;  // reaches h_{t-1}
          }
          du[bd * length + t] = dx * step;
          ddt[bd * length + t] = dstep + dx * ub[t];
        }
      }
    }
  });
  for (int64_t task = 0; task < tasks; ++task) {
    for (int64_t i = 0; i < dim * n_state; ++i) dA[i] += accA[task][i];
    for (int64_t i = 0; i < bc_size; ++i) {
      dBs[i] += accB[task][i];
      dCs[i] += accC[task][i];
    }
  }
}

void check(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), name, " must be a contiguous CPU tensor");
}

}  // namespace

std::vector<torch::Tensor> scan_forward(torch::Tensor u, torch::Tensor dt, torch::Tensor A, torch::Tensor Bs,
                                        torch::Tensor Cs) {
  for (auto [x, name] : {std::pair{u, "u"}, {dt, "dt"}, {A, "A"}, {Bs, "B"}, {Cs, "C"}}) check(x, name);
  const int64_t batch = u.size(0), dim = u.size(1), length = u.size(2), n_state = A.size(1);
  auto y = torch::empty_like(u);
  auto last = torch::empty({batch, dim, n_state}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    forward_kernel<scalar_t>(u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                             Bs.data_ptr<scalar_t>(), Cs.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                             last.data_ptr<scalar_t>(), batch, dim, length, n_state, Bs.size(1), Bs.size(0), Bs.size(2));
  });
  return {y, last};
}

std::vector<torch::Tensor> scan_backward(torch::Tensor u, torch::Tensor dt, torch::Tensor A, torch::Tensor Bs,
                                         torch::Tensor Cs, torch::Tensor dy, torch::Tensor dlast) {
  for (auto [x, name] : {std::pair{u, "u"}, {dt, "dt"}, {A, "A"}, {Bs, "B"}, {Cs, "C"}, {dy, "dy"}, {dlast, "dlast"}})
    check(x, name);
  const int64_t batch = u.size(0), dim = u.size(1), length = u.size(2), n_state = A.size(1);
  auto du = torch::empty_like(u), ddt = torch::empty_like(u);
  auto dA = torch::zeros_like(A), dBs = torch::zeros_like(Bs), dCs = torch::zeros_like(Cs);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    backward_kernel<scalar_t>(u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                              Bs.data_ptr<scalar_t>(), Cs.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                              dlast.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddt.data_ptr<scalar_t>(),
                              dA.data_ptr<scalar_t>(), dBs.data_ptr<scalar_t>(), dCs.data_ptr<scalar_t>(), batch, dim,
                              length, n_state, Bs.size(1), Bs.size(0), Bs.size(2));
  });
  return {du, ddt, dA, dBs, dCs};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
}
