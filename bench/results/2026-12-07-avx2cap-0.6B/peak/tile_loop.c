// Build: gcc -O2 -mavx2 -mfma tile_loop.c -o tile_loop. The inner loop of the AVX2 f32 kernel
// (6 rows x 16 outputs: 2 weight loads, 6 broadcasts, 12 FMAs per input feature, unrolled by
// four) on operands that stay in L1 or L2, in five layouts: rows 16 KiB apart; the rows packed
// side by side; weights 256 B apart per feature (the Panels layout, 16 of 64 outputs) over 384
// features; weights contiguous over 384; rows at a run-time stride with 256 B weights.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static float x[6 * 4096] __attribute__((aligned(64)));
static float w[4096 * 64] __attribute__((aligned(64)));
#define STEP(k, XR) { __m256 w0 = _mm256_load_ps(&w[(k) * WS]), w1 = _mm256_load_ps(&w[(k) * WS + 8]); __m256 b; \
  b = _mm256_broadcast_ss(XR(0, k)); a0 = _mm256_fmadd_ps(b, w0, a0); a1 = _mm256_fmadd_ps(b, w1, a1); \
  b = _mm256_broadcast_ss(XR(1, k)); a2 = _mm256_fmadd_ps(b, w0, a2); a3 = _mm256_fmadd_ps(b, w1, a3); \
  b = _mm256_broadcast_ss(XR(2, k)); a4 = _mm256_fmadd_ps(b, w0, a4); a5 = _mm256_fmadd_ps(b, w1, a5); \
  b = _mm256_broadcast_ss(XR(3, k)); a6 = _mm256_fmadd_ps(b, w0, a6); a7 = _mm256_fmadd_ps(b, w1, a7); \
  b = _mm256_broadcast_ss(XR(4, k)); a8 = _mm256_fmadd_ps(b, w0, a8); a9 = _mm256_fmadd_ps(b, w1, a9); \
  b = _mm256_broadcast_ss(XR(5, k)); a10 = _mm256_fmadd_ps(b, w0, a10); a11 = _mm256_fmadd_ps(b, w1, a11); }
#define ROWS(r, k) (&x[(r) * 4096 + (k)])
#define RT(r, k) (xb + (r) * stride + (k))
static volatile long vstride = 4096;
#define PACKED(r, k) (&x[(k) * 6 + (r)])
#define RUN(NAME, XR, WSV, KV) \
static double NAME(void) { const int WS = WSV; const int KK = KV; long stride = vstride; const float *xb = x; __m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0; \
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0); \
  for (long rep = 0; rep < 200000; rep++) for (int k = 0; k < KK; k += 4) { STEP(k, XR) STEP(k+1, XR) STEP(k+2, XR) STEP(k+3, XR) } \
  clock_gettime(CLOCK_MONOTONIC, &t1); double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec); \
  __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)),_mm256_add_ps(_mm256_add_ps(a4,a5),_mm256_add_ps(_mm256_add_ps(a6,a7),_mm256_add_ps(_mm256_add_ps(a8,a9),_mm256_add_ps(a10,a11))))); \
  float o[8]; _mm256_storeu_ps(o, t); if (o[0] == 12345.f) printf("x"); \
  return 200000.0 * KK * 12 * 16 / s / 1e9; }
RUN(rows, ROWS, 16, 256)
RUN(packed, PACKED, 16, 256)
RUN(strided, ROWS, 64, 384)
RUN(strided16, ROWS, 16, 384)
RUN(runtime, RT, 64, 384)
int main(void) {
  for (int i = 0; i < 6 * 4096; i++) x[i] = 1e-9f; for (int i = 0; i < 4096 * 64; i++) w[i] = 1e-9f;
  for (int i = 0; i < 3; i++) printf("rows: %.1f  packed: %.1f  weights at 256 B per feature, 384 features: %.1f  contiguous, 384: %.1f  runtime stride rows, strided w: %.1f GFLOP/s per core\n", rows(), packed(), strided(), strided16(), runtime());
}
