// Build: gcc -O2 -mavx512f -mavx512bf16 bf16_peak.c -o bf16_peak. Run alone, then two at once.
// Peak rate of vdpbf16ps on one core: 12 independent accumulators, register operands only.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void) {
  volatile float seed = 1.0f; __m512 a0=_mm512_set1_ps(seed),a1=_mm512_set1_ps(seed+1),a2=_mm512_set1_ps(seed+2),a3=_mm512_set1_ps(seed+3),a4=_mm512_set1_ps(seed+4),a5=_mm512_set1_ps(seed+5),a6=_mm512_set1_ps(seed+6),a7=_mm512_set1_ps(seed+7),a8=_mm512_set1_ps(seed+8),a9=_mm512_set1_ps(seed+9),a10=_mm512_set1_ps(seed+10),a11=_mm512_set1_ps(seed+11);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  long n = 200000000;
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long k = 0; k < n; k++)
    { a0=_mm512_dpbf16_ps(a0,a,b); a1=_mm512_dpbf16_ps(a1,a,b); a2=_mm512_dpbf16_ps(a2,a,b); a3=_mm512_dpbf16_ps(a3,a,b);
      a4=_mm512_dpbf16_ps(a4,a,b); a5=_mm512_dpbf16_ps(a5,a,b); a6=_mm512_dpbf16_ps(a6,a,b); a7=_mm512_dpbf16_ps(a7,a,b);
      a8=_mm512_dpbf16_ps(a8,a,b); a9=_mm512_dpbf16_ps(a9,a,b); a10=_mm512_dpbf16_ps(a10,a,b); a11=_mm512_dpbf16_ps(a11,a,b); }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  __m512 acc[12]={a0,a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11}; float sink = 0; for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(acc[i]);
  printf("%.1f GFLOP/s per core (64 flops per instruction), %.3g instr/ns, sink %g\n",
         n * 12 * 64 / s / 1e9, n * 12 / s / 1e9, sink);
}
