//! AMX kernel of the quantized integer matrix product (see [`super::qgemm`]), for
//! CPUs with Advanced Matrix Extensions (Intel Sapphire Rapids and later).
//!
//! This module needs `unsafe` for inline assembly (Rust has no stable AMX
//! intrinsics), the Linux system call that grants a process the AMX register state,
//! and raw-pointer tile loads; [`gemm`] checks every buffer length once before any
//! pointer is formed.
//!
//! `tdpbusd` multiplies a 16-row tile of u8 values of A by a tile of i8 values of B
//! laid out in groups of four rows (the layout of the VNNI kernel's panels) and adds
//! every four products into an i32 element, wrapping, never saturating: exact modulo
//! 2³², so it gives the bits of the reference as `vpdpbusd` does. Operands are brought
//! to u8 × i8 and the zero points restored exactly as in the VNNI kernel; this module
//! only replaces its inner loop. A block of the result is 32 rows × 32 columns in four
//! accumulator tiles; per 64 values of `k` it loads two tiles of A and two of B and
//! issues four `tdpbusd`.
#![allow(unsafe_code)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::qgemm::QData;
use super::qgemm_avx512::PackedA;
use crate::ctx::Ctx;

/// Columns per packed panel of B (two tiles of sixteen i32 columns).
pub(super) const NR: usize = 32;
/// Rows per block of the result (two tiles of sixteen rows).
const MB: usize = 32;
/// Values of `k` per tile step (64 bytes per tile row).
const KB: usize = 64;
/// How many tile steps ahead of the loads B is prefetched into L1.
const PF_STEPS: usize = 4;
/// What `k` is padded to in [`pack_b`]'s panels.
pub(super) const K_ALIGN: usize = KB;

/// True when the CPU has AMX-TILE and AMX-INT8, AVX-512 F/BW/VNNI for the zero-point
/// terms, and the kernel granted this process the AMX tile state. Checked once.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| super::qgemm_avx512::available() && cpu_has_amx_int8() && request_tiles())
}

fn cpu_has_amx_int8() -> bool {
    // SAFETY: CPUID leaf 7 exists on every x86_64 CPU that has AVX-512 (checked
    // first by the caller); executing it has no other effect.
    #[allow(unused_unsafe)]
    let leaf = unsafe { __cpuid_count(7, 0) };
    // EDX bit 24: AMX-TILE; bit 25: AMX-INT8.
    leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 25) != 0
}

/// Asks Linux for permission to use the AMX tile data state (`arch_prctl
/// ARCH_REQ_XCOMP_PERM`), without which the first tile instruction faults.
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call that only changes which register state this process may
    // use; it reads and writes no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tiles() -> bool {
    false
}

/// Packs B (`k×n`, element `i` row-major given by `b(i)`, already i8) into panels of
/// [`NR`] columns as the VNNI kernel does (group `q` of four rows is `NR` runs of four
/// bytes), with `k` padded to a whole number of [`KB`] tile steps. Padding is zero,
/// which adds nothing.
pub(super) fn pack_b(k: usize, n: usize, b: &dyn Fn(usize) -> i8) -> Vec<i8> {
    super::qgemm_avx512::pack_b_groups(k, padded_groups(k), n, b)
}

/// A packed for the tile loads: as u8 (`a ^ 0x80 = a + 128` for i8, the zero point
/// moved alike), `k` padded with zeros to whole steps of [`KB`] and the rows to whole
/// blocks of [`MB`], and ordered so that every tile is 1 KiB of memory: for each group
/// of 16 rows, for each step, the 16 rows' bytes of that step one after the other.
/// Each row's sum (over its real `k` values) and zero point in the u8 domain go with
/// it, as the zero-point terms need them.
///
/// # Safety
/// The CPU has AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_a_tiles(m: usize, k: usize, a: QData<'_>, za: &[i32]) -> PackedA {
    let kp = k.div_ceil(KB) * KB;
    let steps = kp / KB;
    let mut data = vec![0u8; m.div_ceil(MB) * MB * kp];
    let mut sums = vec![0i32; m];
    let mut zps = vec![0i32; m];
    for i in 0..m {
        let (g, r) = (i / 16, i % 16);
        // Each 64-value step of the row is one fixed-size copy (a few vector moves,
        // not a copy call), and the row's sum is one vectorized pass over the source
        // row: summing as it copied, a value at a time, took 9% of an int8 MLP's run.
        for st in 0..steps {
            let (lo, hi) = (st * KB, ((st + 1) * KB).min(k));
            if lo >= hi {
                break;
            }
            let at = ((g * steps + st) * 16 + r) * KB;
            let dst = &mut data[at..at + (hi - lo)];
            match a {
                QData::U8(v) => {
                    let src = &v[i * k + lo..i * k + hi];
                    match (
                        <&mut [u8; KB]>::try_from(&mut *dst),
                        <&[u8; KB]>::try_from(src),
                    ) {
                        (Ok(d), Ok(x)) => *d = *x,
                        _ => dst.copy_from_slice(src),
                    }
                }
                QData::I8(v) => {
                    for (d, &x) in dst.iter_mut().zip(&v[i * k + lo..i * k + hi]) {
                        *d = (x as u8) ^ 0x80;
                    }
                }
            }
        }
        // Wrapping, as the reference sums: exact modulo 2³². An i8 value `x` was
        // stored as `x + 128`.
        let sum = match a {
            QData::U8(v) => v[i * k..(i + 1) * k]
                .iter()
                .fold(0u32, |s, &x| s.wrapping_add(u32::from(x))),
            QData::I8(v) => v[i * k..(i + 1) * k]
                .iter()
                .fold(0u32, |s, &x| s.wrapping_add((i32::from(x) + 128) as u32)),
        };
        sums[i] = sum as i32;
        let shift = match a {
            QData::U8(_) => 0,
            QData::I8(_) => 128,
        };
        zps[i] = (if za.len() == 1 { za[0] } else { za[i] }).wrapping_add(shift);
    }
    PackedA {
        data,
        kp,
        sums,
        zps,
    }
}

/// Groups of four rows of a packed panel: `k` rounded up to whole tile steps.
pub(super) fn padded_groups(k: usize) -> usize {
    k.div_ceil(KB) * KB / 4
}

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            // Bytes per row (u16 at 16 + 2t), rows (u8 at 48 + t).
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// `out = (A − za)·(B − zb)`. `panels` is B packed by [`pack_b`]; `zb` and `csadj`
/// (B's zero points and adjusted column sums, see [`super::qgemm`]) are padded to
/// whole panels. The caller checked the shapes of `a`, `za` and `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    ctx: &Ctx,
    m: usize,
    k: usize,
    n: usize,
    a: QData<'_>,
    za: &[i32],
    panels: &[i8],
    zb: &[i32],
    csadj: &[i32],
    out: &mut [i32],
) {
    let kq = padded_groups(k);
    let np = n.div_ceil(NR);
    if out.len() != m * n || panels.len() != np * kq * NR * 4 || zb.len() != np * NR {
        return;
    }
    if csadj.len() != np * NR || m == 0 || n == 0 {
        return;
    }
    // Rows padded to whole blocks and `k` to whole tile steps, with zeros.
    // SAFETY: the CPU has AVX-512 F/BW (`available`, checked when B was packed).
    let pa = unsafe { pack_a_tiles(m, k, a, za) };
    if pa.kp != kq * 4 || pa.data.len() < m.div_ceil(MB) * MB * pa.kp {
        return;
    }
    let b = Panels {
        data: panels,
        kq,
        n,
        zb,
        csadj,
    };
    let per = m.div_ceil(ctx.threads()).div_ceil(MB) * MB;
    ctx.for_each_chunk(out, per * n, |ci, chunk| {
        let r0 = ci * per;
        // SAFETY: `pa` holds whole blocks of MB rows of `kp = 4·kq` bytes covering
        // rows `r0..r0 + chunk.len()/n` (checked above), `b` holds `np` panels of
        // `kq` groups of NR×4 bytes with `zb`/`csadj` padded to `np·NR`; `chunk` is
        // whole rows of `out`; the CPU has AMX and AVX-512 (`available`, checked when
        // B was packed).
        unsafe { rows(&pa, r0, chunk.len() / n, &b, chunk) };
    });
}

struct Panels<'a> {
    data: &'a [i8],
    kq: usize,
    n: usize,
    zb: &'a [i32],
    csadj: &'a [i32],
}

/// Rows `r0..r0+nrows` of the product into `c` (whole rows of `n` columns).
///
/// # Safety
/// As stated at the call in [`gemm`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows(a: &PackedA, r0: usize, nrows: usize, b: &Panels<'_>, c: &mut [i32]) {
    let n = b.n;
    if nrows == 0 || c.len() < nrows * n {
        return;
    }
    let cfg = TileConfig::new();
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    let steps = b.kq * 4 / KB;
    let panel_len = b.kq * NR * 4;
    // The four accumulator tiles of a block, stored as 32 rows of 32 i32.
    let mut dots = [0i32; MB * NR];
    let mut i = 0;
    while i < nrows {
        let row = r0 + i;
        let rb = (nrows - i).min(MB);
        // Tile-ordered A (`tiles_of`): rows `row..row+16` at step `s` are 1 KiB at
        // `((row/16)·steps + s)·1024`.
        let a0 = a.data.as_ptr().add(row / 16 * steps * 1024);
        let a1 = a0.add(steps * 1024);
        for p in 0..n.div_ceil(NR) {
            let bp = b.data.as_ptr().add(p * panel_len) as *const u8;
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                let ak0 = a0.add(s * 1024);
                let ak1 = a1.add(s * 1024);
                let bk = bp.add(s * (KB / 4) * NR * 4);
                // A step's loads reuse the operand tiles the previous step's
                // products read, so a load that misses L1 stalls the chain. Fetch
                // B's step (2 KiB) PF_STEPS ahead (past a panel's end that is the
                // next panel, or past the buffer, where a prefetch does nothing);
                // A stays in L1 across the panels. About 5% on 64×784×512.
                let ahead = bk.wrapping_add(PF_STEPS * (KB / 4) * NR * 4);
                let mut l = 0;
                while l < (KB / 4) * NR * 4 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(l) as *const i8);
                    l += 64;
                }
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    a0 = in(reg) ak0,
                    a1 = in(reg) ak1,
                    b0 = in(reg) bk,
                    b1 = in(reg) bk.add(64),
                    sa = in(reg) KB,
                    sb = in(reg) NR * 4,
                    options(nostack, readonly)
                );
            }
            let d = dots.as_mut_ptr() as *mut u8;
            let sd = NR * 4;
            asm!(
                "tilestored [{d0} + {sd}*1], tmm0",
                "tilestored [{d1} + {sd}*1], tmm1",
                "tilestored [{d2} + {sd}*1], tmm2",
                "tilestored [{d3} + {sd}*1], tmm3",
                d0 = in(reg) d,
                d1 = in(reg) d.add(64),
                d2 = in(reg) d.add(16 * sd),
                d3 = in(reg) d.add(16 * sd + 64),
                sd = in(reg) sd,
                options(nostack)
            );
            let w = NR.min(n - p * NR);
            finish(
                &dots,
                &a.sums[row..row + rb],
                &a.zps[row..row + rb],
                &b.zb[p * NR..(p + 1) * NR],
                &b.csadj[p * NR..(p + 1) * NR],
                c.as_mut_ptr().add(i * n + p * NR),
                n,
                w,
            );
        }
        i += rb;
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// `c = dot − zb·Σa − za·(Σb − K·zb)`, lane by lane, wrapping, for `sums.len()` rows
/// and the first `w` of [`NR`] columns.
///
/// # Safety
/// `c` points at `sums.len()` rows `ldc` apart of at least `w` elements; `zb` and
/// `csadj` hold `NR` values; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn finish(
    dots: &[i32; MB * NR],
    sums: &[i32],
    zps: &[i32],
    zb: &[i32],
    csadj: &[i32],
    c: *mut i32,
    ldc: usize,
    w: usize,
) {
    let zbv = [
        _mm512_loadu_si512(zb.as_ptr() as *const _),
        _mm512_loadu_si512(zb.as_ptr().add(16) as *const _),
    ];
    let csv = [
        _mm512_loadu_si512(csadj.as_ptr() as *const _),
        _mm512_loadu_si512(csadj.as_ptr().add(16) as *const _),
    ];
    let lanes = |v: usize| w.saturating_sub(v * 16).min(16);
    let masks: [__mmask16; 2] = [
        ((1u32 << lanes(0)) - 1) as __mmask16,
        ((1u32 << lanes(1)) - 1) as __mmask16,
    ];
    for (r, (&sum, &z)) in sums.iter().zip(zps).enumerate() {
        let s = _mm512_set1_epi32(sum);
        let z = _mm512_set1_epi32(z);
        for v in 0..2 {
            let dot = _mm512_loadu_si512(dots.as_ptr().add(r * NR + v * 16) as *const _);
            let x = _mm512_sub_epi32(dot, _mm512_mullo_epi32(zbv[v], s));
            let x = _mm512_sub_epi32(x, _mm512_mullo_epi32(z, csv[v]));
            _mm512_mask_storeu_epi32(c.wrapping_add(r * ldc + v * 16), masks[v], x);
        }
    }
}
