//! Times the canonical matrix product on the benchmark models' shapes, with the right
//! operand packed ahead as a plan does for constant weights, and checks every result
//! against the scalar reference bit for bit. With one thread the figure is the
//! thread's CPU time, which other processes' load does not stretch.
//!
//!     cargo run --release -p deed-runtime --example linalg_bench -- [THREADS]

use std::time::Instant;

use deed_runtime::kernels::{gemm, gemm_prepacked, gemm_reference, Mat, PackedB};
use deed_runtime::{Ctx, KernelMode};

fn bench(name: &str, (m, k, n): (usize, usize, usize), trans_b: bool, threads: usize) {
    bench_t(name, (m, k, n), false, trans_b, threads);
}

/// As [`bench`], with A optionally stored transposed (as `Conv`'s `colᵀ`).
fn bench_t(
    name: &str,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    threads: usize,
) {
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let (Some(am), Some(bm)) = (
        if trans_a {
            Mat::row_major(&a, k, m).map(Mat::t)
        } else {
            Mat::row_major(&a, m, k)
        },
        if trans_b {
            Mat::row_major(&b, n, k).map(Mat::t)
        } else {
            Mat::row_major(&b, k, n)
        },
    ) else {
        eprintln!("{name}: bad shape");
        return;
    };
    let ctx = Ctx::new(KernelMode::Fast, threads);
    let mut c = vec![0.0f32; m * n];
    let mut r = vec![0.0f32; m * n];
    if gemm(&ctx, am, bm, &mut c).is_err() || gemm_reference(am, bm, &mut r).is_err() {
        eprintln!("{name}: failed");
        return;
    }
    if c.iter().zip(&r).any(|(x, y)| x.to_bits() != y.to_bits()) {
        eprintln!("{name}: fast kernel differs from the reference");
        std::process::exit(1);
    }
    // Constant weights are packed once while planning: time that form too.
    let packed = PackedB::new(bm);
    let flop = 2.0 * (m * n * k) as f64;
    let iters = (2e9 / flop).clamp(5.0, 5000.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let cpu = thread_cpu();
        for _ in 0..iters {
            let _ = match &packed {
                Some(p) => gemm_prepacked(&ctx, am, bm, p, &mut c),
                None => gemm(&ctx, am, bm, &mut c),
            };
        }
        // One thread: its CPU time is not stretched by other processes' load.
        let spent = if threads == 1 {
            thread_cpu() - cpu
        } else {
            t.elapsed().as_secs_f64()
        };
        best = best.min(spent / iters as f64);
    }
    println!(
        "{name:30} m={m:4} k={k:4} n={n:5} transB={trans_b:5} threads={threads} {:9.1} us {:6.2} GFLOP/s (B packed ahead)",
        best * 1e6,
        flop / best / 1e9
    );
}

/// This thread's CPU time in seconds (wall time where the platform has no such clock).
fn thread_cpu() -> f64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        #[allow(unsafe_code)]
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    bench("mlp b1 784x512", (1, 784, 512), false, threads);
    bench("mlp b1 512x512", (1, 512, 512), false, threads);
    bench("mlp b64 784x512", (64, 784, 512), false, threads);
    bench("mlp b64 512x512", (64, 512, 512), false, threads);
    bench("mlp b64 784x512 transB", (64, 784, 512), true, threads);
    bench("transformer 128x256x256", (128, 256, 256), false, threads);
    bench("transformer 128x256x1024", (128, 256, 1024), false, threads);
    bench("conv 3->16 3x3 32x32", (16, 27, 1024), false, threads);
    bench("conv 32->32 3x3 16x16", (32, 288, 256), false, threads);
    bench("conv 64->64 3x3 8x8", (64, 576, 64), false, threads);
    bench("attention q·kᵀ 128x64x128", (128, 64, 128), false, threads);
    bench("attention p·v 128x128x64", (128, 128, 64), false, threads);
    bench_t("conv stem colᵀ·Wᵀ", (1024, 27, 32), true, true, threads);
    bench_t("conv 32 16x16 colᵀ·Wᵀ", (256, 288, 32), true, true, threads);
    bench_t("conv 64 8x8 colᵀ·Wᵀ", (64, 576, 64), true, true, threads);
    bench_t("conv 128 4x4 colᵀ·Wᵀ", (16, 1152, 128), true, true, threads);
    bench("square 512", (512, 512, 512), false, threads);
}
