use qwen3guard::*;
use std::time::Instant;
fn main() {
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20); libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30); }
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let dtype: Precision = args[2].parse().unwrap();
    let len: usize = args[3].parse().unwrap();
    let reps: usize = args[4].parse().unwrap();
    let ckpt = Checkpoint::open(std::path::Path::new(dir)).unwrap();
    let opts = LoadOptions { precision: dtype };
    let g = StreamGuard::load(&ckpt, &opts).unwrap();
    let ids: Vec<u32> = (0..len as u32).map(|i| 1000 + (i * 7919) % 50_000).collect();
    for _ in 0..reps {
        let t = Instant::now();
        let _s = g.open_ids(&ids).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("{len} tokens: {ms:.1} ms, {:.1} tok/s", len as f64 / ms * 1000.0);
    }
}
