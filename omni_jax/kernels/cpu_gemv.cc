// Decode-time CPU kernels, as XLA FFI custom calls (built and loaded by cpu_gemv.py with
// g++ -O3 -march=native):
//   omni_jax_packed_gemv_f32: y[M, N] = x[M, K] @ W[K, N] for a few rows (M <= 64 or so), W packed
//     into 32-column strips, [ceil(N / 32), K, 32], so each strip is one sequential read. Such a
//     product reads every weight once and is bound by memory bandwidth; XLA:CPU's dot runs it on
//     one thread. Weights are packed as stacks ([L, S, K, 32], one per decoder layer) and a
//     product names its layer, so no per-layer slice is ever copied.
//   omni_jax_pack_f32: the packer ([L, K, N] or [L, N, K] → [L, S, K, 32]).
//   omni_jax_decoder_layer_f32: one whole Qwen2 decoder layer for one new token per row (norms,
//     q/k/v, rotary, attention over a shared prompt cache and the row's own cache, o, SwiGLU MLP),
//     so a decode step is one call per layer with no XLA op in between.
// Work is split into units (weight strips, attention heads) that the calling thread and helpers
// scheduled on XLA's own intra-op thread pool claim one at a time: no thread of our own competes
// with XLA's for the cores, and a helper that starts late (or never) only leaves the caller more
// units to do.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kStrip = 32;  // columns per packed strip

// The register tile of `tile`: kRows rows × one strip (kStrip columns) of accumulators, in vectors of
// the widest float SIMD the build targets. The accumulators, a strip row's kVecs weight vectors and
// the broadcast x value must fit the vector registers, or the inner loop spills to the stack every
// step (an AVX-512 tile built for AVX2 was 7x slower than XLA's dot). AVX-512: 32 registers of 16
// floats, 8 rows × 2 = 16 accumulators. AVX2 (and AVX): 16 registers of 8 floats, 4 vectors a strip
// row, 2 rows × 4 = 8 accumulators (measured best of 1-4 rows, benchmarks/RESULTS.md). Others
// (SSE, NEON): vectors of 4 floats, 8 a strip row, one row.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRowsDefault = 8;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kRowsDefault = 2;
#else
constexpr int kLanes = 4;
constexpr int kRowsDefault = 1;
#endif
#ifdef OMNI_JAX_TILE_ROWS  // a build-time override, for measuring other tiles
constexpr int kRows = OMNI_JAX_TILE_ROWS;
#else
constexpr int kRows = kRowsDefault;  // rows of x per register tile
#endif
constexpr int kVecs = kStrip / kLanes;  // vectors per strip row
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));
inline vec loadv(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// acc[r][0..31] (+)= sum_k xt[k][r] * w[k][0..31] for one strip (w: [K, 32]) and kRows rows (xt: [K, kRows]);
// `add`: accumulate onto acc, else overwrite it.
inline void tile(const float* __restrict xt, const float* __restrict w, int64_t K, bool prefetch, bool add,
                 float* __restrict acc) {
  vec a[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) a[r][v] = add ? loadv(acc + r * kStrip + v * kLanes) : vec{};
  for (int64_t k = 0; k < K; ++k, w += kStrip, xt += kRows) {
    if (prefetch) {  // both cache lines of the row 32 ahead (measured best: 18.4 GB/s vs 16.2 for one line 16 ahead)
      __builtin_prefetch(w + 32 * kStrip);
      __builtin_prefetch(w + 32 * kStrip + 16);
    }
    vec wv[kVecs];
    for (int v = 0; v < kVecs; ++v) wv[v] = loadv(w + v * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const float s = xt[r];
      for (int v = 0; v < kVecs; ++v) a[r][v] += s * wv[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) std::memcpy(acc + r * kStrip + v * kLanes, &a[r][v], sizeof(vec));
}

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Units of one parallel loop, shared by the caller and its helpers, claimed `grain` at a time.
struct Claims {
  std::atomic<int64_t> next{0}, finished{0};
  int64_t units = 0, grain = 1;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;  // only called while the caller waits
};

void Drain(Claims& c) {
  for (int64_t u; (u = c.next.fetch_add(c.grain, std::memory_order_relaxed)) < c.units;) {
    const int64_t end = std::min(c.units, u + c.grain);
    (*c.fn)(u, end);
    c.finished.fetch_add(end - u, std::memory_order_release);
  }
}

constexpr int64_t kMinParallelWork = 1 << 16;  // multiply-adds; smaller loops run on the caller alone

// fn(u0, u1) over [0, units) in runs of consecutive units: on the calling thread and on helpers
// scheduled on XLA's intra-op pool (the caller is normally one of its threads, so pool threads - 1
// helpers), each claiming the next run until none is left; runs of ~1/8 of a thread's share keep
// each thread's reads sequential (a weight strip's prefetch runs on into the next strip) and still
// balance a helper that starts late. Returns when every unit is done. A helper that runs after
// that finds nothing to claim (the claims outlive the call) and never touches fn.
void ForEach(ffi::ThreadPool& pool, int64_t units, int64_t work, const std::function<void(int64_t, int64_t)>& fn) {
  int64_t helpers = 0;
  if (work >= kMinParallelWork && units > 1) helpers = std::min<int64_t>(pool.num_threads() - 1, units - 1);
  if (helpers <= 0) {
    if (units > 0) fn(0, units);
    return;
  }
  auto claims = std::make_shared<Claims>();
  claims->units = units;
  claims->grain = std::max<int64_t>(1, units / ((helpers + 1) * 8));
  claims->fn = &fn;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([claims] { Drain(*claims); });
  Drain(*claims);
  while (claims->finished.load(std::memory_order_acquire) < units) Pause();
}

constexpr int64_t kChunk = 128;  // rows of a strip (16 KiB) that all row blocks read while in L1

// Strips [s0, s1) for every block of kRows rows. With several blocks (more rows than a register tile
// holds), each chunk of kChunk strip rows is read from memory by the first block and from L1 by the
// others, partial sums kept in `acc`: the strip crosses the memory bus once, and L2 never.
void Strips(const float* xt, const float* wp, float* y, int64_t M, int64_t K, int64_t N, int64_t s0,
            int64_t s1) {
  const int64_t blocks = (M + kRows - 1) / kRows;
  thread_local std::vector<float> acc_buf;
  acc_buf.resize(blocks * kRows * kStrip);
  float* acc = acc_buf.data();
  const int64_t chunk = blocks == 1 ? K : kChunk;
  for (int64_t s = s0; s < s1; ++s) {
    const float* w = wp + s * K * kStrip;
    const int64_t c0 = s * kStrip, cols = std::min<int64_t>(kStrip, N - c0);
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kc = std::min(chunk, K - k0);
      for (int64_t b = 0; b < blocks; ++b)  // later blocks find the chunk in L1
        tile(xt + (b * K + k0) * kRows, w + k0 * kStrip, kc, /*prefetch=*/b == 0, /*add=*/k0 > 0,
             acc + b * kRows * kStrip);
    }
    for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + c0, acc + m * kStrip, cols * sizeof(float));
  }
}

// x [M, K] → xt [blocks of kRows rows, K, kRows], zero padded: the right-hand layout of `tile`.
void ToBlocks(const float* x, int64_t M, int64_t K, std::vector<float>& xt) {
  const int64_t blocks = (M + kRows - 1) / kRows;
  xt.assign(blocks * K * kRows, 0.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xt[((m / kRows) * K + k) * kRows + m % kRows] = x[m * K + k];
}

// y [M, N] = x [M, K] @ layer `layer` of the packed stack wp [L, S, K, 32] (S = ceil(N / 32)).
ffi::Error PackedGemv(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wp,
                      ffi::ResultBuffer<ffi::F32> y, int64_t layer) {
  const auto xd = x.dimensions(), wd = wp.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 4 || yd.size() != 2 || wd[3] != kStrip)
    return ffi::Error::InvalidArgument("packed_gemv: want x [M, K], packed w [L, S, K, 32], y [M, N]");
  const int64_t M = xd[0], K = xd[1], L = wd[0], S = wd[1], N = yd[1];
  if (wd[2] != K || yd[0] != M || S != (N + kStrip - 1) / kStrip || layer < 0 || layer >= L)
    return ffi::Error::InvalidArgument("packed_gemv: shapes or layer do not agree");
  if (M == 0 || N == 0) return ffi::Error::Success();
  thread_local std::vector<float> xt;
  ToBlocks(x.typed_data(), M, K, xt);
  float* out = y->typed_data();
  const float* w = wp.typed_data() + layer * S * K * kStrip;
  const float* xtp = xt.data();  // a plain pointer: inside the job, `xt` would name the worker's own copy
  ForEach(pool, S, M * K * N, [&](int64_t s0, int64_t s1) { Strips(xtp, w, out, M, K, N, s0, s1); });
  return ffi::Error::Success();
}

// Packs a stack of matrices: w [L, K, N] (or [L, N, K] when transposed, e.g. a tied embedding used
// as the output projection) → [L, S, K, 32], zero padded past column N.
ffi::Error Pack(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out, bool transposed) {
  const auto wd = w.dimensions(), od = out->dimensions();
  if (wd.size() != 3 || od.size() != 4 || od[3] != kStrip || od[0] != wd[0])
    return ffi::Error::InvalidArgument("pack: want w [L, K, N] and out [L, S, K, 32]");
  const int64_t L = wd[0], K = transposed ? wd[2] : wd[1], N = transposed ? wd[1] : wd[2], S = od[1];
  if (od[2] != K || S != (N + kStrip - 1) / kStrip)
    return ffi::Error::InvalidArgument("pack: shapes do not agree");
  const float* src = w.typed_data();
  float* dst = out->typed_data();
  constexpr int64_t kb = 32;  // rows of K per unit: each unit writes whole [32, 32] tiles
  const int64_t kblocks = (K + kb - 1) / kb, units = L * (transposed ? S : kblocks);
  ForEach(pool, units, L * K * N, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      if (!transposed) {  // rows k0..k0+31 of matrix l, read in order, to every strip
        const int64_t l = u / kblocks, k0 = (u % kblocks) * kb, k1 = std::min(K, k0 + kb);
        const float* m = src + l * K * N;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t c0 = s * kStrip, cols = std::min<int64_t>(kStrip, N - c0);
          float* o = dst + ((l * S + s) * K) * kStrip;
          for (int64_t k = k0; k < k1; ++k) {
            std::memcpy(o + k * kStrip, m + k * N + c0, cols * sizeof(float));
            if (cols < kStrip) std::fill(o + k * kStrip + cols, o + (k + 1) * kStrip, 0.0f);
          }
        }
      } else {  // strip s of matrix l: rows c0..c0+31 of the [N, K] input, transposed in [32, 32] tiles
        const int64_t l = u / S, s = u % S, c0 = s * kStrip, cols = std::min<int64_t>(kStrip, N - c0);
        const float* m = src + l * K * N;
        float* o = dst + u * K * kStrip;
        for (int64_t k0 = 0; k0 < K; k0 += kb) {
          const int64_t k1 = std::min(K, k0 + kb);
          for (int64_t k = k0; k < k1; ++k) std::fill(o + k * kStrip + cols, o + (k + 1) * kStrip, 0.0f);
          for (int64_t j = 0; j < cols; ++j) {
            const float* row = m + (c0 + j) * K;
            for (int64_t k = k0; k < k1; ++k) o[k * kStrip + j] = row[k];
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

// ---- one whole decoder layer for one decode token ---------------------------------------------
// A packed weight of the stack at `layer`: w [S, K, 32] for y [M, N].
struct Packed {
  const float* w;
  int64_t K, N, S;
};

// Layer `layer` of a packed stack [L, S, K, 32] for y [M, N] = x [M, K] @ w; false if it does not fit.
bool GetPacked(const ffi::Buffer<ffi::F32>& b, int64_t layer, int64_t K, int64_t N, Packed* out) {
  const auto d = b.dimensions();
  if (d.size() != 4 || d[3] != kStrip || d[2] != K || N <= 0 || d[1] != (N + kStrip - 1) / kStrip || layer < 0 ||
      layer >= d[0])
    return false;
  *out = Packed{b.typed_data() + layer * d[1] * K * kStrip, K, N, d[1]};
  return true;
}

template <typename B>
int64_t Count(const B& b) {
  return static_cast<int64_t>(b.element_count());
}

template <typename A, typename B>
bool SameDims(const A& a, const B& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

inline float Dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
  if (n >= kLanes) {
    vec acc{};
    for (; i + kLanes <= n; i += kLanes) acc += loadv(a + i) * loadv(b + i);
    for (int j = 0; j < kLanes; ++j) s += acc[j];
  }
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void Axpy(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    vec v = loadv(y + i) + a * loadv(x + i);
    std::memcpy(y + i, &v, sizeof(v));
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// out = w * x / sqrt(mean(x^2) + eps), row by row.
void RmsNorm(const float* x, const float* w, float* out, int64_t M, int64_t D, float eps) {
  for (int64_t m = 0; m < M; ++m) {
    const float* r = x + m * D;
    const float inv = 1.0f / std::sqrt(Dot(r, r, D) / static_cast<float>(D) + eps);
    for (int64_t d = 0; d < D; ++d) out[m * D + d] = w[d] * (r[d] * inv);
  }
}

// In place: v = v * cos + rotate_half(v) * sin over each head of H values (cos/sin: [H] of the row).
void Rotary(float* v, const float* cos, const float* sin, int64_t heads, int64_t H) {
  const int64_t half = H / 2;
  float tmp[1024];
  for (int64_t h = 0; h < heads; ++h, v += H) {
    std::memcpy(tmp, v, H * sizeof(float));
    for (int64_t i = 0; i < half; ++i) v[i] = tmp[i] * cos[i] - tmp[i + half] * sin[i];
    for (int64_t i = half; i < H; ++i) v[i] = tmp[i] * cos[i] + tmp[i - half] * sin[i];
  }
}

// y[i] = x @ p[i] for several products of the same x (xt: `ToBlocks(x)`), their strips as one loop.
void Products(ffi::ThreadPool& pool, const float* xt, const Packed* p, float* const* y, int count, int64_t M) {
  int64_t total = 0, work = 0;
  for (int i = 0; i < count; ++i) total += p[i].S, work += M * p[i].K * p[i].N;
  ForEach(pool, total, work, [&](int64_t g0, int64_t g1) {
    int64_t base = 0;
    for (int i = 0; i < count; base += p[i].S, ++i) {
      const int64_t lo = std::max(g0, base), hi = std::min(g1, base + p[i].S);
      if (lo < hi) Strips(xt, p[i].w, y[i], M, p[i].K, p[i].N, lo - base, hi - base);
    }
  });
}

// One decoder layer (Qwen2: pre-norm GQA attention with q/k/v bias and rotary, pre-norm SwiGLU MLP)
// for one new token per row, attending to its prompt's cache, its own cache (positions < step) and
// itself. Rows r·G … r·G+G-1 continue prompt r (G = rows / prompts). Returns the layer's output and
// the token's key (after rotary) and value, for the caller to write at position `step`.
ffi::Error DecoderLayer(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> cos,
                        ffi::Buffer<ffi::F32> sin, ffi::Buffer<ffi::F32> ln1, ffi::Buffer<ffi::F32> wq,
                        ffi::Buffer<ffi::F32> bq,
                        ffi::Buffer<ffi::F32> wk, ffi::Buffer<ffi::F32> bk, ffi::Buffer<ffi::F32> wv,
                        ffi::Buffer<ffi::F32> bv, ffi::Buffer<ffi::F32> wo, ffi::Buffer<ffi::F32> ln2,
                        ffi::Buffer<ffi::F32> wg, ffi::Buffer<ffi::F32> wu, ffi::Buffer<ffi::F32> wd,
                        ffi::Buffer<ffi::F32> pk, ffi::Buffer<ffi::F32> pv, ffi::Buffer<ffi::PRED> p_valid,
                        ffi::Buffer<ffi::F32> ck, ffi::Buffer<ffi::F32> cv, ffi::Buffer<ffi::S32> step_buf,
                        ffi::ResultBuffer<ffi::F32> x_out, ffi::ResultBuffer<ffi::F32> k_out,
                        ffi::ResultBuffer<ffi::F32> v_out, int64_t layer, float eps) {
  const auto xd = x.dimensions(), pkd = pk.dimensions(), ckd = ck.dimensions();
  if (xd.size() != 2 || pkd.size() != 4 || ckd.size() != 4)
    return ffi::Error::InvalidArgument("decoder_layer: want x [R, D], prompt cache [P, K, T, H], cache [R, K, S, H]");
  const int64_t R = xd[0], D = xd[1], P = pkd[0], KV = pkd[1], T = pkd[2], H = pkd[3], S = ckd[2];
  const int64_t QD = Count(bq), NH = QD / H;
  if (H <= 0 || H % 2 || H > 1024 || QD % H || KV <= 0 || NH % KV || P <= 0 || R % P || ckd[0] != R ||
      ckd[1] != KV || ckd[3] != H || !SameDims(pv.dimensions(), pkd) || !SameDims(cv.dimensions(), ckd) ||
      Count(p_valid) != P * T || Count(cos) != R * H || Count(sin) != R * H ||
      Count(ln1) != D || Count(ln2) != D || Count(bk) != KV * H ||
      Count(bv) != KV * H || Count(*k_out) != R * KV * H || Count(*v_out) != R * KV * H ||
      Count(*x_out) != R * D)
    return ffi::Error::InvalidArgument("decoder_layer: shapes do not agree");
  const int64_t step = step_buf.typed_data()[0];
  if (step < 0 || step >= S) return ffi::Error::InvalidArgument("decoder_layer: step outside the cache");
  const auto wdd = wd.dimensions();
  const int64_t FF = wdd.size() == 4 ? wdd[2] : 0;
  Packed q_p, k_p, v_p, o_p, g_p, u_p, d_p;
  if (!GetPacked(wq, layer, D, QD, &q_p) || !GetPacked(wk, layer, D, KV * H, &k_p) ||
      !GetPacked(wv, layer, D, KV * H, &v_p) || !GetPacked(wo, layer, QD, D, &o_p) ||
      !GetPacked(wg, layer, D, FF, &g_p) || !GetPacked(wu, layer, D, FF, &u_p) || !GetPacked(wd, layer, FF, D, &d_p))
    return ffi::Error::InvalidArgument("decoder_layer: a packed weight does not fit the layer's shapes");

  thread_local std::vector<float> xt, xn, q, attn, gate, up;
  const float* xs = x.typed_data();
  float* xo = x_out->typed_data();
  float* kn = k_out->typed_data();
  float* vn = v_out->typed_data();

  // Attention block.
  xn.resize(R * D);
  RmsNorm(xs, ln1.typed_data(), xn.data(), R, D, eps);
  ToBlocks(xn.data(), R, D, xt);
  q.resize(R * QD);
  {
    const Packed p[3] = {q_p, k_p, v_p};
    float* const y[3] = {q.data(), kn, vn};
    Products(pool, xt.data(), p, y, 3, R);
  }
  for (int64_t r = 0; r < R; ++r) {
    float* qr = q.data() + r * QD;
    float* kr = kn + r * KV * H;
    float* vr = vn + r * KV * H;
    for (int64_t i = 0; i < QD; ++i) qr[i] += bq.typed_data()[i];
    for (int64_t i = 0; i < KV * H; ++i) kr[i] += bk.typed_data()[i], vr[i] += bv.typed_data()[i];
    Rotary(qr, cos.typed_data() + r * H, sin.typed_data() + r * H, NH, H);
    Rotary(kr, cos.typed_data() + r * H, sin.typed_data() + r * H, KV, H);
  }
  attn.assign(R * QD, 0.0f);
  {
    const int64_t G = R / P, grp = NH / KV, tasks = R * KV, keys = T + step + 1;
    const float scale = 1.0f / std::sqrt(static_cast<float>(H));
    const float* pkp = pk.typed_data();
    const float* pvp = pv.typed_data();
    const bool* valid = p_valid.typed_data();
    const float* ckp = ck.typed_data();
    const float* cvp = cv.typed_data();
    const float* qp = q.data();
    float* out = attn.data();
    ForEach(pool, tasks, 2 * tasks * keys * grp * H, [&](int64_t task0, int64_t task1) {
      thread_local std::vector<float> sc;  // this thread's scores (a helper's own)
      sc.resize(grp * keys);
      for (int64_t task = task0; task < task1; ++task) {
        const int64_t r = task / KV, g = task % KV, p = r / G;
        const float* pkr = pkp + (p * KV + g) * T * H;
        const float* pvr = pvp + (p * KV + g) * T * H;
        const float* ckr = ckp + (r * KV + g) * S * H;
        const float* cvr = cvp + (r * KV + g) * S * H;
        const float* knr = kn + (r * KV + g) * H;
        const float* vnr = vn + (r * KV + g) * H;
        const bool* val = valid + p * T;
        for (int64_t j = 0; j < grp; ++j) {
          const float* qj = qp + r * QD + (g * grp + j) * H;
          float* s = sc.data() + j * keys;
          float top = -INFINITY;
          for (int64_t i = 0; i < T; ++i) s[i] = val[i] ? Dot(qj, pkr + i * H, H) * scale : -INFINITY;
          for (int64_t i = 0; i < step; ++i) s[T + i] = Dot(qj, ckr + i * H, H) * scale;
          s[T + step] = Dot(qj, knr, H) * scale;
          for (int64_t i = 0; i < keys; ++i) top = std::max(top, s[i]);
          float sum = 0.0f;
          for (int64_t i = 0; i < keys; ++i) sum += (s[i] = std::exp(s[i] - top));
          const float inv = 1.0f / sum;
          float* o = out + r * QD + (g * grp + j) * H;
          for (int64_t i = 0; i < T; ++i)
            if (val[i]) Axpy(o, s[i] * inv, pvr + i * H, H);
          for (int64_t i = 0; i < step; ++i) Axpy(o, s[T + i] * inv, cvr + i * H, H);
          Axpy(o, s[T + step] * inv, vnr, H);
        }
      }
    });
  }
  ToBlocks(attn.data(), R, QD, xt);
  {
    float* const y[1] = {xo};
    Products(pool, xt.data(), &o_p, y, 1, R);
  }
  for (int64_t i = 0; i < R * D; ++i) xo[i] += xs[i];

  // MLP block: gate and up in one region, each thread on the same strips of both, then silu(gate) * up.
  RmsNorm(xo, ln2.typed_data(), xn.data(), R, D, eps);
  ToBlocks(xn.data(), R, D, xt);
  gate.resize(R * FF);
  up.resize(R * FF);
  {
    const Packed gp = g_p, upk = u_p;
    const float* xtp = xt.data();
    float* gd = gate.data();
    float* ud = up.data();
    ForEach(pool, gp.S, 2 * R * D * FF, [&](int64_t s0, int64_t s1) {
      Strips(xtp, gp.w, gd, R, D, FF, s0, s1);
      Strips(xtp, upk.w, ud, R, D, FF, s0, s1);
      const int64_t c0 = s0 * kStrip, c1 = std::min(FF, s1 * kStrip);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const float g = gd[r * FF + c];
          gd[r * FF + c] = g / (1.0f + std::exp(-g)) * ud[r * FF + c];
        }
    });
  }
  ToBlocks(gate.data(), R, FF, xt);
  {
    std::vector<float>& h = up;  // reuse: the MLP's output [R, D]
    h.resize(R * D);
    float* const y[1] = {h.data()};
    Products(pool, xt.data(), &d_p, y, 1, R);
    for (int64_t i = 0; i < R * D; ++i) xo[i] += h[i];
  }
  return ffi::Error::Success();
}

}  // namespace

// The build's register tile, for cpu_gemv.tile_shape(): float lanes per vector, rows per tile.
extern "C" int OmniJaxTileLanes() { return kLanes; }
extern "C" int OmniJaxTileRows() { return kRows; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniJaxPackedGemvF32, PackedGemv,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("layer"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniJaxPackF32, Pack,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));


XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniJaxDecoderLayerF32, DecoderLayer,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // cos
                                  .Arg<ffi::Buffer<ffi::F32>>()   // sin
                                  .Arg<ffi::Buffer<ffi::F32>>()   // input norm
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q bias
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k bias
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v bias
                                  .Arg<ffi::Buffer<ffi::F32>>()   // o packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // post-attention norm
                                  .Arg<ffi::Buffer<ffi::F32>>()   // gate packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // up packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // down packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // prompt keys
                                  .Arg<ffi::Buffer<ffi::F32>>()   // prompt values
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // prompt valid
                                  .Arg<ffi::Buffer<ffi::F32>>()   // own keys
                                  .Arg<ffi::Buffer<ffi::F32>>()   // own values
                                  .Arg<ffi::Buffer<ffi::S32>>()   // step
                                  .Ret<ffi::Buffer<ffi::F32>>()   // x out
                                  .Ret<ffi::Buffer<ffi::F32>>()   // new key
                                  .Ret<ffi::Buffer<ffi::F32>>()   // new value
                                  .Attr<int64_t>("layer")
                                  .Attr<float>("eps"));
