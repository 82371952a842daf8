// Build: gcc -O2 -mavx2 -mfma fma_peak.c -o fma_peak. Run alone, then two at once.
// Peak rate of 256-bit fused multiply-adds (vfmadd231ps ymm) on one core: 12 independent
// accumulators, register operands only: the ceiling of an AVX2 f32 product.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void) {
  volatile float seed = 1.0f;
  __m256 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(seed + i);
  __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  long n = 400000000;
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  float sink = 0, out[8];
  for (int i = 0; i < 12; i++) { _mm256_storeu_ps(out, acc[i]); for (int j = 0; j < 8; j++) sink += out[j]; }
  printf("%.1f GFLOP/s per core (16 flops per instruction), %.3g instr/ns, sink %g\n",
         n * 12 * 16 / s / 1e9, n * 12 / s / 1e9, sink);
}
