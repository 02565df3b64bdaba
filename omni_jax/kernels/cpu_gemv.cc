// Decode-time matrix products on CPU: y[M, N] = x[M, K] @ W[K, N] for a few rows (M <= 64 or so),
// with W pre-packed into 32-column strips, [ceil(N / 32), K, 32], so that each strip is one
// sequential read, and the strips split over a small persistent thread pool. Such a product reads
// every weight once per call and is bound by memory bandwidth; XLA:CPU's dot runs it on one
// thread. Weights are packed as stacks ([L, S, K, 32], one per decoder layer) and a product names
// its layer, so no per-layer slice is ever copied. Built and loaded by omni_jax/kernels/cpu_gemv.py
// (g++ -O3 -march=native); XLA FFI targets "omni_jax_packed_gemv_f32" and "omni_jax_pack_f32".
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kStrip = 32;  // columns per packed strip
constexpr int kRows = 8;    // rows of x per register tile
typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// acc[r][0..31] = sum_k xt[k][r] * w[k][0..31] for one strip (w: [K, 32]) and 8 rows (xt: [K, 8]).
inline void tile(const float* __restrict xt, const float* __restrict w, int64_t K, bool prefetch,
                 float acc[kRows][kStrip]) {
  v16 a0[kRows], a1[kRows];
  for (int r = 0; r < kRows; ++r) a0[r] = a1[r] = v16{};
  for (int64_t k = 0; k < K; ++k, w += kStrip, xt += kRows) {
    if (prefetch) __builtin_prefetch(w + 16 * kStrip);
    const v16 w0 = load16(w), w1 = load16(w + 16);
    for (int r = 0; r < kRows; ++r) {
      const float s = xt[r];
      a0[r] += s * w0;
      a1[r] += s * w1;
    }
  }
  for (int r = 0; r < kRows; ++r) {
    std::memcpy(acc[r], &a0[r], sizeof(v16));
    std::memcpy(acc[r] + 16, &a1[r], sizeof(v16));
  }
}

// A pool of persistent workers; TryRun(fn) calls fn(0..threads-1), fn(0) on the calling thread.
class Pool {
 public:
  explicit Pool(int threads) : threads_(1) {
    // Workers that cannot be started (thread limits) leave a smaller pool, never an exception.
    for (int i = 1; i < threads; ++i) {
      try {
        std::thread([this, i] { Work(i); }).detach();
      } catch (const std::system_error&) {
        break;
      }
      threads_ = i + 1;
    }
  }
  int threads() const { return threads_; }
  // Returns false (and runs nothing) when another call holds the pool: the caller then works alone.
  bool TryRun(const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    job_ = &fn;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    while (pending_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    return true;
  }

 private:
  void Work(int id) {
    uint64_t seen = 0;
    for (;;) {
      // Spin briefly (the next product of a decode step usually follows within microseconds).
      for (int i = 0; i < 20000 && generation_.load(std::memory_order_acquire) == seen; ++i) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      (*job_)(id);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int threads_;  // set while the workers start, fixed after
  std::mutex busy_, mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
};

int PoolThreads() {
  if (const char* env = std::getenv("OMNI_JAX_GEMV_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  int n = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, std::min(n, 64));
}

Pool& GetPool() {
  static Pool* pool = new Pool(PoolThreads());  // never destroyed: its workers are detached
  return *pool;
}

// Runs fn(t) for t in [0, pool threads) on the pool, or fn over every part inline when the pool is busy
// (another call holds it) or has one thread.
void Parallel(int64_t work, const std::function<void(int, int)>& fn) {
  Pool& pool = GetPool();
  const int n = pool.threads();
  if (n > 1 && work >= (1 << 16)) {  // smaller jobs are not worth waking the pool
    const std::function<void(int)> job = [&](int t) { fn(t, n); };
    if (pool.TryRun(job)) return;
  }
  fn(0, 1);
}

// Strips [s0, s1) for every block of 8 rows.
void Strips(const float* xt, const float* wp, float* y, int64_t M, int64_t K, int64_t N, int64_t s0,
            int64_t s1) {
  alignas(64) float acc[kRows][kStrip];
  const int64_t blocks = (M + kRows - 1) / kRows;
  for (int64_t s = s0; s < s1; ++s) {
    const float* w = wp + s * K * kStrip;
    const int64_t c0 = s * kStrip, cols = std::min<int64_t>(kStrip, N - c0);
    for (int64_t b = 0; b < blocks; ++b) {
      tile(xt + b * K * kRows, w, K, /*prefetch=*/b == 0, acc);  // later blocks find the strip in cache
      const int64_t rows = std::min<int64_t>(kRows, M - b * kRows);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(y + (b * kRows + r) * N + c0, acc[r], cols * sizeof(float));
    }
  }
}

// y [M, N] = x [M, K] @ layer `layer` of the packed stack wp [L, S, K, 32] (S = ceil(N / 32)).
ffi::Error PackedGemv(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wp, ffi::ResultBuffer<ffi::F32> y,
                      int64_t layer) {
  const auto xd = x.dimensions(), wd = wp.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 4 || yd.size() != 2 || wd[3] != kStrip)
    return ffi::Error::InvalidArgument("packed_gemv: want x [M, K], packed w [L, S, K, 32], y [M, N]");
  const int64_t M = xd[0], K = xd[1], L = wd[0], S = wd[1], N = yd[1];
  if (wd[2] != K || yd[0] != M || S != (N + kStrip - 1) / kStrip || layer < 0 || layer >= L)
    return ffi::Error::InvalidArgument("packed_gemv: shapes or layer do not agree");
  if (M == 0 || N == 0) return ffi::Error::Success();
  // x transposed into blocks of 8 rows, [blocks, K, 8], zero padded.
  const int64_t blocks = (M + kRows - 1) / kRows;
  thread_local std::vector<float> xt;
  xt.assign(blocks * K * kRows, 0.0f);
  const float* xs = x.typed_data();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xt[((m / kRows) * K + k) * kRows + m % kRows] = xs[m * K + k];
  float* out = y->typed_data();
  const float* w = wp.typed_data() + layer * S * K * kStrip;
  const float* xtp = xt.data();  // a plain pointer: inside the job, `xt` would name the worker's own copy
  Parallel(K * N, [&](int t, int n) { Strips(xtp, w, out, M, K, N, S * t / n, S * (t + 1) / n); });
  return ffi::Error::Success();
}

// Packs a stack of matrices: w [L, K, N] (or [L, N, K] when transposed, e.g. a tied embedding used
// as the output projection) → [L, S, K, 32], zero padded past column N.
ffi::Error Pack(ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out, bool transposed) {
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
  Parallel(L * K * N, [&](int t, int n) {
    for (int64_t u = units * t / n; u < units * (t + 1) / n; ++u) {
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

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniJaxPackedGemvF32, PackedGemv,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("layer"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniJaxPackF32, Pack,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));

extern "C" int omni_jax_gemv_threads() { return GetPool().threads(); }
