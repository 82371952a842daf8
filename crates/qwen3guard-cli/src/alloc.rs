//! The allocator tuning every driver of the engine starts with (the CLI, and the profiling
//! examples, which include this file, so that what they time is what the CLI runs).

/// Keeps freed tensor buffers in the process instead of returning them to the kernel.
///
/// Every forward pass allocates and frees buffers of a few megabytes; with glibc's
/// defaults many of them are fresh mappings that the kernel must zero on first touch
/// (the largest cost after the matrix products in a profile of a 600-token prefill).
/// Reusing them changes no result. `mallopt` and these parameters are glibc's: musl,
/// macOS and Windows builds skip the tuning.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
