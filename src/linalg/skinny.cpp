#include "lowrank/linalg/skinny.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

// Explicit SIMD through GCC's vector extensions: 64-byte vectors (16 floats, 8 doubles), which
// the compiler lowers to AVX-512, AVX2 or SSE2 instructions; target_clones builds one version per
// instruction set and picks the best the CPU has when the library is loaded. k is a compile-time
// constant (1..kMaxSkinnyRank), so the factor's values and the accumulators live in registers.
// Two rows (four for Aᵀ X) share each load of the thin factor.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define LOWRANK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LOWRANK_CLONES
#endif

// load/store pass 64-byte vectors by value; they are inlined inside one translation unit, so the
// ABI note GCC gives for that (-Wpsabi) does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lowrank {
namespace linalg {
namespace {

template <typename T>
struct Simd {
  typedef T type __attribute__((vector_size(64)));
};

template <typename T>
inline typename Simd<T>::type load(const T* p) {
  typename Simd<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(T* p, typename Simd<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

at::Tensor batched(const at::Tensor& t) { return t.dim() == 2 ? t.unsqueeze(0) : t; }

bool usable(std::initializer_list<const at::Tensor*> ts, int64_t k) {
  if (k > kMaxSkinnyRank || k < 1) return false;
  const auto dt = (*ts.begin())->scalar_type();
  if (dt != at::kFloat && dt != at::kDouble) return false;
  for (const at::Tensor* t : ts)
    if (t->scalar_type() != dt || !t->is_contiguous() || t->device().type() != at::kCPU) return false;
  return true;
}

// y[i, c] = Σ_j a[i, j] · xt[c, j] for one matrix; xt is X transposed, [K, n].
// With ADD, a ← a + g first, in the same pass (g has a's layout).
template <typename T, int K, bool ADD>
LOWRANK_CLONES void matmul_rows(T* __restrict a, const T* __restrict g, const T* __restrict xt, T* __restrict y,
                                int64_t m, int64_t n) {
  using V = typename Simd<T>::type;
  constexpr int64_t W = sizeof(V) / sizeof(T);
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) {
    T* r0 = a + i * n;
    T* r1 = r0 + n;
    V acc0[K], acc1[K];
    for (int c = 0; c < K; ++c) acc0[c] = acc1[c] = V{};
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      V u = load(r0 + j), v = load(r1 + j);
      if (ADD) {
        u += load(g + i * n + j);
        v += load(g + (i + 1) * n + j);
        store(r0 + j, u);
        store(r1 + j, v);
      }
      for (int c = 0; c < K; ++c) {
        const V x = load(xt + c * n + j);
        acc0[c] += u * x;
        acc1[c] += v * x;
      }
    }
    if (ADD)
      for (int64_t jj = j; jj < n; ++jj) {
        r0[jj] += g[i * n + jj];
        r1[jj] += g[(i + 1) * n + jj];
      }
    for (int c = 0; c < K; ++c) {
      T s0 = 0, s1 = 0;
      for (int64_t l = 0; l < W; ++l) {
        s0 += acc0[c][l];
        s1 += acc1[c][l];
      }
      for (int64_t jj = j; jj < n; ++jj) {
        s0 += r0[jj] * xt[c * n + jj];
        s1 += r1[jj] * xt[c * n + jj];
      }
      y[i * K + c] = s0;
      y[(i + 1) * K + c] = s1;
    }
  }
  for (; i < m; ++i) {
    if (ADD)
      for (int64_t j = 0; j < n; ++j) a[i * n + j] += g[i * n + j];
    for (int c = 0; c < K; ++c) {
      T s = 0;
      for (int64_t j = 0; j < n; ++j) s += a[i * n + j] * xt[c * n + j];
      y[i * K + c] = s;
    }
  }
}

// yt[c, j] = Σ_i x[i, c] · a[i, j] for one matrix; yt is Y transposed, [K, n].
template <typename T, int K>
LOWRANK_CLONES void matmul_t_rows(const T* __restrict a, const T* __restrict x, T* __restrict yt, int64_t m,
                                  int64_t n) {
  using V = typename Simd<T>::type;
  constexpr int64_t W = sizeof(V) / sizeof(T);
  std::fill(yt, yt + K * n, T(0));
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const T* r = a + i * n;
    const T* xi = x + i * K;
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      const V u0 = load(r + j), u1 = load(r + n + j), u2 = load(r + 2 * n + j), u3 = load(r + 3 * n + j);
      for (int c = 0; c < K; ++c) {
        T* q = yt + c * n + j;
        store(q, load(q) + xi[c] * u0 + xi[K + c] * u1 + xi[2 * K + c] * u2 + xi[3 * K + c] * u3);
      }
    }
    for (; j < n; ++j)
      for (int c = 0; c < K; ++c)
        for (int rr = 0; rr < 4; ++rr) yt[c * n + j] += xi[rr * K + c] * r[rr * n + j];
  }
  for (; i < m; ++i)
    for (int c = 0; c < K; ++c)
      for (int64_t j = 0; j < n; ++j) yt[c * n + j] += x[i * K + c] * a[i * n + j];
}

// out[i, j] = Σ_c p[i, c] st[c, j] for one matrix; st is S transposed, [K, n]. Writes each
// element of out once (BLAS would first zero it, then accumulate into it).
template <typename T, int K>
LOWRANK_CLONES void expand_rows(T* __restrict out, const T* __restrict p, const T* __restrict st, int64_t m,
                                int64_t n) {
  using V = typename Simd<T>::type;
  constexpr int64_t W = sizeof(V) / sizeof(T);
  for (int64_t i = 0; i < m; ++i) {
    T* o = out + i * n;
    const T* pi = p + i * K;
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      V y = V{};
      for (int c = 0; c < K; ++c) y += pi[c] * load(st + c * n + j);
      store(o + j, y);
    }
    for (; j < n; ++j) {
      T y = 0;
      for (int c = 0; c < K; ++c) y += pi[c] * st[c * n + j];
      o[j] = y;
    }
  }
}

// Calls F<K>() for the runtime k in 1..kMaxSkinnyRank.
template <typename F>
void with_rank(int64_t k, F&& f) {
  switch (k) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    case 4: f(std::integral_constant<int, 4>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    case 6: f(std::integral_constant<int, 6>()); break;
    case 7: f(std::integral_constant<int, 7>()); break;
    case 8: f(std::integral_constant<int, 8>()); break;
    default: TORCH_INTERNAL_ASSERT(false, "skinny kernels: k = ", k, " outside 1..", kMaxSkinnyRank);
  }
}

}  // namespace

namespace {

// Y = A X, with A ← A + G first when G is defined (the two public forms below).
void matmul_out(at::Tensor& Y, const at::Tensor& A, const at::Tensor* G, const at::Tensor& X, const char* name) {
  const at::Tensor a = batched(A), x = batched(X);
  at::Tensor y = batched(Y);
  TORCH_CHECK(a.dim() == 3 && x.dim() == 3 && y.dim() == 3 && x.size(1) == a.size(2) && y.size(1) == a.size(1) &&
                  y.size(2) == x.size(2) && x.size(0) == a.size(0) && y.size(0) == a.size(0),
              name, ": shapes ", Y.sizes(), " = ", A.sizes(), (G ? " + G" : ""), " x ", X.sizes(), " do not fit");
  at::Tensor g;
  if (G) {
    g = batched(*G);
    TORCH_CHECK(g.sizes() == a.sizes(), name, ": G ", G->sizes(), " must have A's shape ", A.sizes());
    TORCH_CHECK(a.data_ptr() != g.data_ptr(), name, ": G must not be A");
  }
  const int64_t b = a.size(0), m = a.size(1), n = a.size(2), k = x.size(2);
  if (!usable({&y, &a}, k) || x.scalar_type() != a.scalar_type() ||
      (G && (g.scalar_type() != a.scalar_type() || !g.is_contiguous()))) {
    at::Tensor am = a;  // A's storage, written in place
    if (G) am.add_(g);
    at::bmm_out(y, am, x);
    return;
  }
  const at::Tensor xt = x.transpose(1, 2).contiguous();  // [b, k, n]: small
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "skinny_matmul_out", [&] {
    with_rank(k, [&](auto K) {
      scalar_t* ap = const_cast<scalar_t*>(a.data_ptr<scalar_t>());  // written only with G
      for (int64_t bi = 0; bi < b; ++bi) {
        scalar_t* yp = y.data_ptr<scalar_t>() + bi * m * k;
        const scalar_t* xp = xt.data_ptr<scalar_t>() + bi * k * n;
        if (G) matmul_rows<scalar_t, K(), true>(ap + bi * m * n, g.data_ptr<scalar_t>() + bi * m * n, xp, yp, m, n);
        else matmul_rows<scalar_t, K(), false>(ap + bi * m * n, nullptr, xp, yp, m, n);
      }
    });
  });
}

}  // namespace

void skinny_matmul_out(at::Tensor& Y, const at::Tensor& A, const at::Tensor& X) {
  matmul_out(Y, A, nullptr, X, "skinny_matmul_out");
}

void skinny_add_matmul_out(at::Tensor& Y, at::Tensor& A, const at::Tensor& G, const at::Tensor& X) {
  matmul_out(Y, A, &G, X, "skinny_add_matmul_out");
}

void skinny_matmul_t_out(at::Tensor& Y, const at::Tensor& A, const at::Tensor& X) {
  const at::Tensor a = batched(A), x = batched(X);
  at::Tensor y = batched(Y);
  TORCH_CHECK(a.dim() == 3 && x.dim() == 3 && y.dim() == 3 && x.size(1) == a.size(1) && y.size(1) == a.size(2) &&
                  y.size(2) == x.size(2) && x.size(0) == a.size(0) && y.size(0) == a.size(0),
              "skinny_matmul_t_out: shapes ", Y.sizes(), " = ", A.sizes(), "^T x ", X.sizes(), " do not fit");
  const int64_t b = a.size(0), m = a.size(1), n = a.size(2), k = x.size(2);
  if (!usable({&y, &a}, k) || x.scalar_type() != a.scalar_type()) {
    at::bmm_out(y, a.transpose(1, 2), x);
    return;
  }
  const at::Tensor xc = x.contiguous();  // small
  at::Tensor yt = at::empty({b, k, n}, a.options());  // small
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "skinny_matmul_t_out", [&] {
    with_rank(k, [&](auto K) {
      for (int64_t bi = 0; bi < b; ++bi)
        matmul_t_rows<scalar_t, K()>(a.data_ptr<scalar_t>() + bi * m * n, xc.data_ptr<scalar_t>() + bi * m * k,
                                     yt.data_ptr<scalar_t>() + bi * k * n, m, n);
    });
  });
  y.copy_(yt.transpose(1, 2));
}

void skinny_expand_out(at::Tensor& Out, const at::Tensor& P, const at::Tensor& S) {
  const at::Tensor p = batched(P), s = batched(S);
  at::Tensor out = batched(Out);
  TORCH_CHECK(out.dim() == 3 && p.dim() == 3 && s.dim() == 3 && p.size(0) == out.size(0) &&
                  s.size(0) == out.size(0) && p.size(1) == out.size(1) && s.size(1) == out.size(2) &&
                  s.size(2) == p.size(2),
              "skinny_expand_out: shapes ", Out.sizes(), " = ", P.sizes(), " x ", S.sizes(), "^T do not fit");
  const int64_t b = out.size(0), m = out.size(1), n = out.size(2), k = p.size(2);
  if (!usable({&out, &p}, k) || s.scalar_type() != out.scalar_type()) {
    at::bmm_out(out, p, s.transpose(1, 2));
    return;
  }
  const at::Tensor st = s.transpose(1, 2).contiguous();  // [b, k, n]: small
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "skinny_expand_out", [&] {
    with_rank(k, [&](auto K) {
      for (int64_t bi = 0; bi < b; ++bi)
        expand_rows<scalar_t, K()>(out.data_ptr<scalar_t>() + bi * m * n, p.data_ptr<scalar_t>() + bi * m * k,
                                   st.data_ptr<scalar_t>() + bi * k * n, m, n);
    });
  });
}

}  // namespace linalg
}  // namespace lowrank
