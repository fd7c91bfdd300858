// Fused softmax and per-row attention statistics for the kernel's explicit path on CPU.
//
// One call per block of query rows replaces a softmax and five passes over the block: for each
// row of scores (MASKED = -1e30 where not attended) it writes the probabilities and returns the
// row's max, log-sum-exp, entropy and the prefix sums of the probabilities at given cut columns,
// reading the row three times while it sits in the core's cache. Sums are accumulated in float
// vectors over at most 256 elements and then in double, so their error does not grow with the
// row length.
#if defined(__AVX2__) && !defined(CPU_CAPABILITY_AVX2)
#define CPU_CAPABILITY_AVX2
#endif
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <limits>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kChunk = 256;  // elements summed in float before the partial sum goes to double

float hsum(const Vec& v) {
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, v);
}

// One row: x scores (K), y probabilities out, cuts (E, non-increasing), pref out (E).
void one_row(const float* x, float* y, int64_t K, const int64_t* cuts, int64_t E, float* top, float* lse,
             float* ent, float* pref) {
  const int64_t W = Vec::size();
  Vec vm(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + W <= K; j += W) vm = at::vec::maximum(vm, Vec::loadu(x + j));
  float m = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vm);
  for (; j < K; ++j) m = std::max(m, x[j]);
  const Vec vmax(m);
  double z = 0.0;
  for (int64_t a = 0; a < K; a += kChunk) {  // y = exp(x - max), z = sum y
    const int64_t b = std::min(K, a + kChunk);
    Vec acc(0.f);
    int64_t q = a;
    for (; q + W <= b; q += W) {
      Vec e = (Vec::loadu(x + q) - vmax).exp_u20();
      e.store(y + q);
      acc = acc + e;
    }
    float part = hsum(acc);
    for (; q < b; ++q) {
      y[q] = std::exp(x[q] - m);
      part += y[q];
    }
    z += part;
  }
  const float inv = static_cast<float>(1.0 / z);
  const Vec vinv(inv);
  double dot = 0.0, mass = 0.0;
  int64_t pos = 0;
  for (int64_t k = E; k >= 0; --k) {  // segments [pos, cut) in ascending order; the last ends at K
    const int64_t cut = k > 0 ? std::max(pos, std::min(K, cuts[k - 1])) : K;
    for (int64_t a = pos; a < cut; a += kChunk) {  // y /= z, sum y, sum y * x
      const int64_t b = std::min(cut, a + kChunk);
      Vec vs(0.f), vd(0.f);
      int64_t q = a;
      for (; q + W <= b; q += W) {
        Vec v = Vec::loadu(y + q) * vinv;
        v.store(y + q);
        vs = vs + v;
        vd = at::vec::fmadd(v, Vec::loadu(x + q), vd);
      }
      float ps = hsum(vs), pd = hsum(vd);
      for (; q < b; ++q) {
        const float v = y[q] * inv;
        y[q] = v;
        ps += v;
        pd += v * x[q];
      }
      mass += ps;
      dot += pd;
    }
    pos = cut;
    if (k > 0) pref[k - 1] = static_cast<float>(mass);
  }
  *top = m;
  const double l = static_cast<double>(m) + std::log(z);
  *lse = static_cast<float>(l);
  *ent = static_cast<float>(l - dot);
}

}  // namespace

// s, p: (R, K) fp32 with contiguous rows; cuts: (nb, E) int64, row r uses cuts[r % nb], each
// non-increasing; top, lse, ent: (R,); pref: (R, E) prefix sums of p at the cuts.
void softmax_stats(const torch::Tensor& s, torch::Tensor& p, const torch::Tensor& cuts, torch::Tensor& top,
                   torch::Tensor& lse, torch::Tensor& ent, torch::Tensor& pref) {
  TORCH_CHECK(s.dim() == 2 && p.sizes() == s.sizes() && s.stride(1) == 1 && p.stride(1) == 1,
              "softmax_stats: s and p must be (R, K) with contiguous rows");
  TORCH_CHECK(s.scalar_type() == at::kFloat && p.scalar_type() == at::kFloat, "softmax_stats: fp32 only");
  TORCH_CHECK(cuts.dim() == 2 && cuts.scalar_type() == at::kLong && cuts.is_contiguous(), "softmax_stats: cuts");
  const int64_t R = s.size(0), K = s.size(1), nb = cuts.size(0), E = cuts.size(1);
  TORCH_CHECK(nb > 0 && R % nb == 0 && top.numel() == R && lse.numel() == R && ent.numel() == R &&
                  pref.numel() == R * E && top.is_contiguous() && lse.is_contiguous() && ent.is_contiguous() &&
                  pref.is_contiguous(),
              "softmax_stats: output shapes");
  const float* S = s.data_ptr<float>();
  float* P = p.data_ptr<float>();
  const int64_t* C = cuts.data_ptr<int64_t>();
  float *T = top.data_ptr<float>(), *L = lse.data_ptr<float>(), *N = ent.data_ptr<float>();
  float* PR = pref.data_ptr<float>();
  const int64_t ss = s.stride(0), ps = p.stride(0);
  pybind11::gil_scoped_release nogil;
  at::parallel_for(0, R, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      one_row(S + r * ss, P + r * ps, K, C + (r % nb) * E, E, T + r, L + r, N + r, PR + r * E);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("softmax_stats", &softmax_stats, "fused softmax and per-row statistics (see rowstats.cpp)");
}
