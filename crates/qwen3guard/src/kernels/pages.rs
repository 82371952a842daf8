//! Weight buffers on huge pages where the system offers them.
//!
//! Decoding streams every weight once per token, and a stream of 4 KiB pages costs a
//! translation miss at every page and stops the processor's prefetchers at every page
//! boundary (under a hypervisor each miss is a two-level walk). Linux backs anonymous
//! memory with 2 MiB pages where asked (`madvise(MADV_HUGEPAGE)`, honoured when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`), but only pages
//! first touched after the advice. So weight storage is allocated zeroed (untouched),
//! advised, and only then filled. The advice is a hint: where it is refused or unknown
//! (other systems, C libraries without the binding) the buffer is an ordinary one and
//! every result is the same. Measured on a 2-core AVX-512 EPYC guest (`stream_timing`,
//! 4B shape, bf16, one token after 128, three alternating runs each): 234 ms against 244
//! ms on ordinary pages; q8 and the 0.6B shape moved by less than the run-to-run noise.

/// The granule of the advice: x86-64's and most aarch64 kernels' huge page.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed elements (all-zero bits is `T::default()` for the kernels' element types),
/// on huge pages where the system gives them; fill it before anything else touches it.
pub(crate) fn zeroed<T: Copy + Default>(len: usize) -> Vec<T> {
    // The standard library asks the allocator for zeroed memory for such types; fresh
    // memory it hands out that way is not touched, so the advice still applies to it.
    // Memory the allocator reuses may already be backed by small pages, and stays so.
    let data = vec![T::default(); len];
    advise_huge(&data);
    data
}

/// Asks for huge pages over the whole 2 MiB pages inside `data`.
fn advise_huge<T>(data: &[T]) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let start = data.as_ptr() as usize;
        let end = start + std::mem::size_of_val(data);
        let first = start.next_multiple_of(HUGE_PAGE);
        let last = end / HUGE_PAGE * HUGE_PAGE;
        if last > first {
            // SAFETY: the range lies inside `data`'s allocation and is page-aligned;
            // MADV_HUGEPAGE changes how its pages are backed, never their contents. A
            // refusal (EINVAL where huge pages are off) leaves ordinary pages.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = data;
}
