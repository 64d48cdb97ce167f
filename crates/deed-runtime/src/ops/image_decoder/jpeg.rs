//! JPEG (ITU T.81 sequential and progressive DCT, Huffman coded, 8-bit samples) decoded
//! to the bit as libjpeg decodes it with its defaults: the accurate integer inverse DCT
//! (`JDCT_ISLOW`, `jidctint.c`), "fancy" triangular chroma upsampling (`jdsample.c`)
//! and its fixed-point YCbCr → RGB tables (`jdcolor.c`). The JPEG standard leaves the
//! inverse DCT and the upsampling to the decoder; these are the choices the ONNX
//! reference (Pillow, on libjpeg-turbo) makes, written here in integer arithmetic, so
//! every machine gets the same pixels.
//!
//! Lossless, hierarchical and arithmetic-coded JPEG, 12-bit samples, four-component
//! (CMYK, YCCK) images, and progressive images whose scans leave low-frequency
//! coefficients incomplete (libjpeg smooths those) are refused as unsupported. Damaged
//! data is an input error: entropy-coded data that ends before the last block, a code
//! no table has, a missing restart marker, a progression out of order. Nothing here
//! panics on any input.

use crate::error::OpError;
use crate::ops::simd;

/// What the frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Info {
    pub width: u32,
    pub height: u32,
    /// Bytes of working memory decoding takes (see [`work_bytes`]).
    pub work_bytes: u64,
}

/// Decoded samples: one per pixel (`gray`) or red, green, blue.
pub(super) struct Pixels {
    pub gray: bool,
    pub samples: Vec<u8>,
}

/// The refusal of an image whose decoding needs more working memory than allowed.
pub(super) fn too_large(w: u32, h: u32, need: u64, max: u64) -> OpError {
    OpError::value(format!(
        "decoding this {w}×{h} JPEG image takes {need} bytes of working memory, more than the limit of {max}"
    ))
}

fn corrupt(detail: &str) -> OpError {
    OpError::value(format!("the JPEG data is damaged: {detail}"))
}

/// The zig-zag order: the natural (row-major) index of the `k`-th coefficient.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A frame component.
#[derive(Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// For each coefficient (zig-zag order), the point transform `Al` of the last
    /// progressive scan that coded it, -1 before any (libjpeg's `coef_bits`).
    bits: [i8; 64],
    /// Blocks per line and block lines of its coefficient grid (whole MCUs).
    bw: usize,
    bh: usize,
    /// Coefficients, 64 per block in natural order, blocks row-major.
    coefs: Vec<i16>,
    scanned: bool,
}

/// Bits a Huffman table decodes at once (see [`Huffman::look`]).
const LOOKAHEAD: u32 = 9;

/// A Huffman table: the canonical codes of T.81 Annex C, decoded by length.
#[derive(Clone, Default)]
struct Huffman {
    /// For each code length 1..=16: the first code, the number of codes, and the index
    /// of its first value.
    first: [u32; 17],
    count: [u32; 17],
    index: [usize; 17],
    values: Vec<u8>,
    /// For each [`LOOKAHEAD`]-bit prefix, `length << 8 | value` of the code it starts
    /// with, when that code is at most [`LOOKAHEAD`] bits long; 0 otherwise.
    look: Vec<u16>,
}

impl Huffman {
    fn new(counts: &[u8], values: &[u8]) -> Result<Huffman, OpError> {
        let mut h = Huffman {
            values: values.to_vec(),
            ..Huffman::default()
        };
        let (mut code, mut at) = (0u32, 0usize);
        for len in 1..=16 {
            let n = u32::from(counts.get(len - 1).copied().unwrap_or(0));
            h.first[len] = code;
            h.count[len] = n;
            h.index[len] = at;
            code += n;
            at += n as usize;
            // Every code of this length must fit in `len` bits.
            if code > 1 << len {
                return Err(corrupt(
                    "a Huffman table has more codes than its lengths allow",
                ));
            }
            code <<= 1;
        }
        h.look = vec![0; 1 << LOOKAHEAD];
        for len in 1..=LOOKAHEAD as usize {
            for i in 0..h.count[len] {
                let Some(&v) = h.values.get(h.index[len] + i as usize) else {
                    continue;
                };
                let shift = LOOKAHEAD as usize - len;
                let at = ((h.first[len] + i) as usize) << shift;
                if let Some(slots) = h.look.get_mut(at..at + (1 << shift)) {
                    slots.fill(((len as u16) << 8) | u16::from(v));
                }
            }
        }
        Ok(h)
    }
}

/// Reads the bits of one entropy-coded segment (byte stuffing removed); restart
/// markers end an interval.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    /// Bits in `acc`, of which the last `fake` are zeros past the data's end.
    count: u32,
    fake: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            pos: 0,
            acc: 0,
            count: 0,
            fake: 0,
        }
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let byte = match self.data.get(self.pos) {
                Some(&0xff) if self.data.get(self.pos + 1) == Some(&0) => {
                    self.pos += 2;
                    0xff
                }
                // A marker (or the end): zeros, which decoding must not reach.
                Some(&0xff) | None => {
                    self.fake += 8;
                    0
                }
                Some(&b) => {
                    self.pos += 1;
                    b
                }
            };
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn bits(&mut self, n: u32) -> Result<u32, OpError> {
        if n == 0 {
            return Ok(0);
        }
        if self.count < n {
            self.fill();
        }
        if n > self.count - self.fake.min(self.count) {
            return Err(corrupt("the entropy-coded data ends before the last block"));
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.count -= n;
        Ok(v)
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, OpError> {
        // A code of at most LOOKAHEAD bits, from the table, when the data holds it.
        if self.count < LOOKAHEAD {
            self.fill();
        }
        let prefix = (self.acc >> (64 - LOOKAHEAD)) as usize;
        if let Some(&e) = h.look.get(prefix).filter(|&&e| e != 0) {
            let len = u32::from(e >> 8);
            if len <= self.count - self.fake.min(self.count) {
                self.acc <<= len;
                self.count -= len;
                return Ok(e as u8);
            }
        }
        let mut code = 0u32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1)?;
            let off = code.wrapping_sub(h.first[len]);
            if code >= h.first[len] && off < h.count[len] {
                return h
                    .values
                    .get(h.index[len] + off as usize)
                    .copied()
                    .ok_or_else(|| corrupt("a Huffman table has fewer values than codes"));
            }
        }
        Err(corrupt("a Huffman code no table has"))
    }

    /// `s` bits as a signed value (T.81 F.2.2.1, EXTEND).
    fn receive_extend(&mut self, s: u8) -> Result<i32, OpError> {
        if s == 0 {
            return Ok(0);
        }
        if s > 16 {
            return Err(corrupt("a coefficient of more than 16 bits"));
        }
        let v = self.bits(u32::from(s))? as i32;
        Ok(if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        })
    }

    /// Moves past the restart marker `RST(n)`, which must come next after the
    /// interval's padding bits.
    fn restart(&mut self, n: u8) -> Result<(), OpError> {
        // The unread bits (at most the padding of the last byte) are dropped; the
        // reader never reads past a marker.
        self.acc = 0;
        self.count = 0;
        self.fake = 0;
        if self.data.get(self.pos..self.pos + 2) != Some(&[0xff, 0xd0 + n]) {
            return Err(corrupt("a restart marker is missing"));
        }
        self.pos += 2;
        Ok(())
    }
}

/// A big-endian u16 at `at`.
fn be16(b: &[u8], at: usize) -> Result<usize, OpError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(usize::from(u16::from_be_bytes([s[0], s[1]]))),
        None => Err(corrupt("the file ends inside a marker segment")),
    }
}

/// The markers of a file: `(marker, segment)` for each, the segment without its length
/// field; a scan's entropy-coded data follows its SOS segment and is skipped over.
struct Markers<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Markers<'a> {
    fn new(b: &'a [u8]) -> Result<Markers<'a>, OpError> {
        if !b.starts_with(&[0xff, 0xd8]) {
            return Err(OpError::value("the input is not a JPEG image"));
        }
        Ok(Markers { b, pos: 2 })
    }

    /// The next marker and its segment; `None` at EOI or the end of the data.
    fn next(&mut self) -> Result<Option<(u8, &'a [u8])>, OpError> {
        // Fill bytes (0xFF) may precede a marker.
        loop {
            match self.b.get(self.pos..self.pos + 2) {
                None => return Ok(None),
                Some([0xff, 0xff]) => self.pos += 1,
                Some(&[0xff, m]) => {
                    self.pos += 2;
                    if m == 0xd9 {
                        return Ok(None);
                    }
                    if (0xd0..=0xd7).contains(&m) || m == 0x01 {
                        continue;
                    }
                    let len = be16(self.b, self.pos)?;
                    let seg = self
                        .b
                        .get(self.pos + 2..self.pos + len.max(2))
                        .filter(|_| len >= 2)
                        .ok_or_else(|| corrupt("a marker segment runs past the end"))?;
                    self.pos += len;
                    return Ok(Some((m, seg)));
                }
                Some(_) => return Err(corrupt("bytes where a marker should be")),
            }
        }
    }

    /// The entropy-coded data from here to the next marker that is not a restart
    /// marker, and moves past it.
    fn entropy(&mut self) -> &'a [u8] {
        let start = self.pos;
        let mut i = start;
        while i + 1 < self.b.len() {
            if self.b[i] == 0xff {
                match self.b[i + 1] {
                    0 | 0xd0..=0xd7 => i += 2,
                    0xff => i += 1,
                    _ => break,
                }
            } else {
                i += 1;
            }
        }
        let end = if i + 1 < self.b.len() {
            i
        } else {
            self.b.len()
        };
        self.pos = end;
        &self.b[start..end]
    }
}

/// The frame header's facts, or the reason the frame is refused.
fn frame(marker: u8, seg: &[u8]) -> Result<(u32, u32, Vec<Component>), OpError> {
    match marker {
        0xc0..=0xc2 => {}
        0xc6 => return Err(OpError::unsupported("hierarchical JPEG images")),
        0xc3 | 0xc7 | 0xcb | 0xcf => return Err(OpError::unsupported("lossless JPEG images")),
        0xc5 => return Err(OpError::unsupported("hierarchical JPEG images")),
        _ => return Err(OpError::unsupported("arithmetic-coded JPEG images")),
    }
    let p = *seg
        .first()
        .ok_or_else(|| corrupt("an empty frame header"))?;
    if p != 8 {
        return Err(OpError::unsupported(format!(
            "JPEG images of {p}-bit samples (only 8-bit)"
        )));
    }
    let height = be16(seg, 1)? as u32;
    let width = be16(seg, 3)? as u32;
    if height == 0 {
        return Err(OpError::unsupported(
            "JPEG images whose height comes after the first scan (DNL)",
        ));
    }
    if width == 0 {
        return Err(corrupt("a zero image width"));
    }
    let n = usize::from(*seg.get(5).ok_or_else(|| corrupt("a short frame header"))?);
    if n == 4 {
        return Err(OpError::unsupported(
            "four-component (CMYK, YCCK) JPEG images",
        ));
    }
    if n != 1 && n != 3 {
        return Err(OpError::unsupported(format!(
            "JPEG images of {n} components"
        )));
    }
    if seg.len() < 6 + 3 * n {
        return Err(corrupt("a short frame header"));
    }
    let mut comps = Vec::with_capacity(n);
    for i in 0..n {
        let c = &seg[6 + 3 * i..9 + 3 * i];
        let (h, v, tq) = (
            usize::from(c[1] >> 4),
            usize::from(c[1] & 15),
            usize::from(c[2]),
        );
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || tq > 3 {
            return Err(corrupt("a component's sampling factors or table"));
        }
        if comps.iter().any(|x: &Component| x.id == c[0]) {
            return Err(corrupt("two components with one identifier"));
        }
        comps.push(Component {
            id: c[0],
            h,
            v,
            tq,
            bits: [-1; 64],
            bw: 0,
            bh: 0,
            coefs: Vec::new(),
            scanned: false,
        });
    }
    Ok((width, height, comps))
}

/// Bytes of working memory decoding an image of `comps` takes: two per coefficient of
/// every component's whole-MCU block grid, one per sample of its inverse DCT's output
/// and of its upsampled plane, and the output's three per pixel.
fn work_bytes(width: u32, height: u32, comps: &[Component]) -> u64 {
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1) as u64;
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1) as u64;
    let (w, h) = (u64::from(width), u64::from(height));
    let (mcux, mcuy) = (w.div_ceil(8 * hmax), h.div_ceil(8 * vmax));
    let blocks: u64 = comps
        .iter()
        .map(|c| mcux * c.h as u64 * mcuy * c.v as u64)
        .sum();
    blocks * 64 * 3 + w * h * (comps.len() as u64 + 3)
}

/// The frame header of `bytes`, read without decoding anything.
pub(super) fn info(bytes: &[u8]) -> Result<Info, OpError> {
    let mut m = Markers::new(bytes)?;
    while let Some((marker, seg)) = m.next()? {
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let (width, height, comps) = frame(marker, seg)?;
            return Ok(Info {
                width,
                height,
                work_bytes: work_bytes(width, height, &comps),
            });
        }
        if marker == 0xda {
            return Err(corrupt("a scan before the frame header"));
        }
    }
    Err(corrupt("no frame header"))
}

/// The image in `bytes`: gray or RGB samples, row-major. Decoding refuses to take more
/// than `max_bytes` of working memory ([`work_bytes`]).
pub(super) fn decode(bytes: &[u8], max_bytes: u64) -> Result<Pixels, OpError> {
    let mut m = Markers::new(bytes)?;
    let mut qt = [[0i32; 64]; 4];
    let mut qt_set = [false; 4];
    let mut dc: [Option<Huffman>; 4] = Default::default();
    let mut ac: [Option<Huffman>; 4] = Default::default();
    let mut restart = 0usize;
    let mut adobe: Option<u8> = None;
    let mut jfif = false;
    let mut frame_: Option<(u32, u32, Vec<Component>)> = None;
    let mut progressive = false;
    let (mut mcux, mut mcuy, mut hmax, mut vmax) = (0, 0, 1, 1);
    while let Some((marker, seg)) = m.next()? {
        match marker {
            0xdb => {
                let mut at = 0;
                while at < seg.len() {
                    let (pq, tq) = (seg[at] >> 4, usize::from(seg[at] & 15));
                    if tq > 3 || pq > 1 {
                        return Err(corrupt("a quantization table's header"));
                    }
                    let n = if pq == 0 { 64 } else { 128 };
                    let t = seg
                        .get(at + 1..at + 1 + n)
                        .ok_or_else(|| corrupt("a short quantization table"))?;
                    for (k, &z) in ZIGZAG.iter().enumerate() {
                        // libjpeg keeps the multipliers as 16-bit values.
                        qt[tq][z] = if pq == 0 {
                            i32::from(t[k])
                        } else {
                            i32::from(u16::from_be_bytes([t[2 * k], t[2 * k + 1]]) as i16)
                        };
                    }
                    qt_set[tq] = true;
                    at += 1 + n;
                }
            }
            0xc4 => {
                let mut at = 0;
                while at < seg.len() {
                    let (tc, th) = (seg[at] >> 4, usize::from(seg[at] & 15));
                    let counts = seg
                        .get(at + 1..at + 17)
                        .ok_or_else(|| corrupt("a short Huffman table"))?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let values = seg
                        .get(at + 17..at + 17 + total)
                        .ok_or_else(|| corrupt("a short Huffman table"))?;
                    if th > 3 || tc > 1 || total > 256 {
                        return Err(corrupt("a Huffman table's header"));
                    }
                    let h = Huffman::new(counts, values)?;
                    if tc == 0 {
                        dc[th] = Some(h);
                    } else {
                        ac[th] = Some(h);
                    }
                    at += 17 + total;
                }
            }
            0xdd => restart = be16(seg, 0)?,
            0xe0 if seg.starts_with(b"JFIF\0") => jfif = true,
            0xee if seg.starts_with(b"Adobe") && seg.len() >= 12 => adobe = Some(seg[11]),
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                if frame_.is_some() {
                    return Err(corrupt("a second frame header"));
                }
                let (w, h, mut comps) = frame(marker, seg)?;
                progressive = marker == 0xc2;
                let need = work_bytes(w, h, &comps);
                if need > max_bytes {
                    return Err(too_large(w, h, need, max_bytes));
                }
                hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
                vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
                mcux = (w as usize).div_ceil(8 * hmax);
                mcuy = (h as usize).div_ceil(8 * vmax);
                for c in &mut comps {
                    c.bw = mcux * c.h;
                    c.bh = mcuy * c.v;
                    c.coefs = vec![0; c.bw * c.bh * 64];
                }
                frame_ = Some((w, h, comps));
            }
            0xda => {
                let Some((w, h, comps)) = frame_.as_mut() else {
                    return Err(corrupt("a scan before the frame header"));
                };
                let ns = usize::from(*seg.first().ok_or_else(|| corrupt("an empty scan header"))?);
                if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
                    return Err(corrupt("a scan header"));
                }
                let band = if progressive {
                    let b = Band {
                        ss: usize::from(seg[1 + 2 * ns]),
                        se: usize::from(seg[2 + 2 * ns]),
                        ah: seg[3 + 2 * ns] >> 4,
                        al: seg[3 + 2 * ns] & 15,
                    };
                    b.check(ns)?;
                    b
                } else {
                    Band::SEQUENTIAL
                };
                let mut scan = Vec::with_capacity(ns);
                let mut mcu_blocks = 0;
                for i in 0..ns {
                    let (id, t) = (seg[1 + 2 * i], seg[2 + 2 * i]);
                    let ci = comps
                        .iter()
                        .position(|c| c.id == id)
                        .ok_or_else(|| corrupt("a scan names a component the frame lacks"))?;
                    let (td, ta) = (usize::from(t >> 4), usize::from(t & 15));
                    // The tables the scan decodes with: DC for a first DC scan, AC for
                    // AC coefficients; a DC refinement reads raw bits.
                    let d = dc.get(td).cloned().flatten();
                    let a = ac.get(ta).cloned().flatten();
                    if (band.ss == 0 && band.ah == 0 && d.is_none()) || (band.se > 0 && a.is_none())
                    {
                        return Err(corrupt("a scan uses a Huffman table not defined"));
                    }
                    if !qt_set[comps[ci].tq] {
                        return Err(corrupt("a component's quantization table is not defined"));
                    }
                    if progressive {
                        band.record(&mut comps[ci])?;
                    }
                    // T.81 B.2.3: at most ten blocks in an interleaved MCU.
                    mcu_blocks += comps[ci].h * comps[ci].v;
                    if ns > 1 && mcu_blocks > 10 {
                        return Err(corrupt("an interleaved MCU of more than ten blocks"));
                    }
                    scan.push(ScanComponent {
                        ci,
                        dc: d.unwrap_or_default(),
                        ac: a.unwrap_or_default(),
                    });
                }
                let data = m.entropy();
                let geo = Geometry {
                    w: *w as usize,
                    h: *h as usize,
                    hmax,
                    vmax,
                    mcux,
                    mcuy,
                };
                decode_scan(data, comps, &scan, band, &geo, restart)?;
            }
            _ => {}
        }
    }
    let Some((w, h, comps)) = frame_ else {
        return Err(corrupt("no frame header"));
    };
    if comps.iter().any(|c| !c.scanned) {
        return Err(corrupt("a component no scan codes"));
    }
    // libjpeg smooths the blocks of a progressive image whose scans leave any of the
    // nine coefficients after DC without all their bits (`decompress_smooth_data`).
    if progressive && comps.iter().any(|c| c.bits[1..10].iter().any(|&b| b != 0)) {
        return Err(OpError::unsupported(
            "progressive JPEG images whose scans leave low-frequency coefficients incomplete",
        ));
    }
    let n = comps.len();
    let ids: Vec<u8> = comps.iter().map(|c| c.id).collect();
    let (w, h) = (w as usize, h as usize);
    let mut planes = Vec::with_capacity(n);
    // Each component's coefficients are freed once transformed.
    for c in comps {
        let q = &qt[c.tq];
        let (pw, ph) = (c.bw * 8, c.bh * 8);
        let mut plane = vec![0u8; pw * ph];
        // Integer arithmetic only: the same values whatever the instruction set.
        simd::with_fma(
            #[inline(always)]
            || {
                for (bi, block) in c.coefs.chunks_exact(64).enumerate() {
                    let (by, bx) = (bi / c.bw.max(1), bi % c.bw.max(1));
                    if let (Ok(block), Some(out)) = (
                        <&[i16; 64]>::try_from(block),
                        plane.get_mut(by * 8 * pw + bx * 8..),
                    ) {
                        idct_islow(block, q, out, pw);
                    }
                }
            },
        );
        drop(c.coefs);
        if hmax % c.h != 0 || vmax % c.v != 0 {
            return Err(OpError::unsupported(
                "JPEG images whose sampling factors do not divide the largest",
            ));
        }
        // The component's real samples (T.81 A.1.1), upsampled to the image.
        let real = Samples {
            plane: &plane,
            pw,
            dw: (w * c.h).div_ceil(hmax),
            dh: (h * c.v).div_ceil(vmax),
        };
        planes.push(real.upsample(hmax / c.h, vmax / c.v, w, h));
    }
    if n == 1 {
        return Ok(Pixels {
            gray: true,
            samples: planes.swap_remove(0),
        });
    }
    // Three components are YCbCr unless an Adobe marker says they are not transformed,
    // or, with no JFIF or Adobe marker, their identifiers spell RGB (libjpeg's rule).
    let rgb = match adobe {
        Some(t) => t == 0,
        None => !jfif && ids == *b"RGB",
    };
    let [p0, p1, p2] = [&planes[0], &planes[1], &planes[2]];
    let triples = p0.iter().zip(p1).zip(p2).map(|((&a, &b), &c)| (a, b, c));
    let mut out = vec![0u8; 3 * p0.len().min(p1.len()).min(p2.len())];
    let pixels = out.chunks_exact_mut(3).zip(triples);
    if rgb {
        for (o, (r, g, b)) in pixels {
            if let [o0, o1, o2] = o {
                (*o0, *o1, *o2) = (r, g, b);
            }
        }
    } else {
        simd::with_fma(
            #[inline(always)]
            || {
                for (o, (y, cb, cr)) in pixels {
                    if let [o0, o1, o2] = o {
                        [*o0, *o1, *o2] = ycc_to_rgb(y, cb, cr);
                    }
                }
            },
        );
    }
    Ok(Pixels {
        gray: false,
        samples: out,
    })
}

/// The frame's size and MCU grid.
struct Geometry {
    w: usize,
    h: usize,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
}

/// A component of a scan, with the tables it decodes with (empty where unused).
struct ScanComponent {
    ci: usize,
    dc: Huffman,
    ac: Huffman,
}

/// The coefficients a scan codes (T.81 G.1.1): the spectral band `ss..=se` (zig-zag
/// indices), the bit position `al` and, when refining, the previous one `ah`.
#[derive(Debug, Clone, Copy)]
struct Band {
    ss: usize,
    se: usize,
    ah: u8,
    al: u8,
}

impl Band {
    /// A sequential scan: every coefficient, whole.
    const SEQUENTIAL: Band = Band {
        ss: 0,
        se: 63,
        ah: 0,
        al: 0,
    };

    /// The checks libjpeg makes of a progressive scan of `ns` components.
    fn check(&self, ns: usize) -> Result<(), OpError> {
        let band = if self.ss == 0 {
            self.se != 0
        } else {
            self.ss > self.se || self.se > 63 || ns != 1
        };
        if band || (self.ah != 0 && self.al + 1 != self.ah) || self.al > 13 {
            return Err(corrupt("a progressive scan's band or bit positions"));
        }
        Ok(())
    }

    /// Records in `c` that this progressive scan codes its band. The scan must bring
    /// the next bits of every coefficient in it, and an AC band must come after the DC
    /// band: where libjpeg only warns, the progression is refused here.
    fn record(&self, c: &mut Component) -> Result<(), OpError> {
        if self.ss > 0 && c.bits[0] < 0 {
            return Err(corrupt("an AC scan before the component's DC scan"));
        }
        let bits = c
            .bits
            .get_mut(self.ss..=self.se)
            .ok_or_else(|| corrupt("a progressive scan's band"))?;
        for b in bits {
            if self.ah != (*b).max(0) as u8 {
                return Err(corrupt("a progressive scan out of order"));
            }
            *b = self.al as i8;
        }
        Ok(())
    }
}

/// A correction bit of a refining AC scan for the nonzero coefficient `v`: when set,
/// its magnitude grows by `p1` (T.81 G.1.2.3), as libjpeg applies it.
fn refine(bits: &mut Bits<'_>, v: &mut i16, p1: i16) -> Result<(), OpError> {
    if bits.bits(1)? == 1 && *v & p1 == 0 {
        *v = if *v >= 0 {
            v.wrapping_add(p1)
        } else {
            v.wrapping_sub(p1)
        };
    }
    Ok(())
}

/// Decodes one scan's entropy-coded `data` into the coefficients of its components:
/// a sequential scan, or one of the four kinds of progressive scan (T.81 G.1.2), as
/// libjpeg's `jdhuff.c` and `jdphuff.c` decode them.
fn decode_scan(
    data: &[u8],
    comps: &mut [Component],
    scan: &[ScanComponent],
    band: Band,
    g: &Geometry,
    restart: usize,
) -> Result<(), OpError> {
    let mut bits = Bits::new(data);
    let mut pred = vec![0i32; scan.len()];
    let mut eobrun = 0u32;
    let sequential = band.ss == 0 && band.se == 63 && band.ah == 0 && band.al == 0;
    // An interleaved scan codes whole MCUs; a scan of one component codes its blocks
    // that hold real samples, row by row (T.81 A.2).
    let (units_x, units_y) = match scan {
        [one] => {
            let c = &comps[one.ci];
            (
                (g.w * c.h).div_ceil(g.hmax).div_ceil(8),
                (g.h * c.v).div_ceil(g.vmax).div_ceil(8),
            )
        }
        _ => (g.mcux, g.mcuy),
    };
    let mut rst = 0u8;
    for unit in 0..units_x * units_y {
        if restart > 0 && unit > 0 && unit % restart == 0 {
            bits.restart(rst)?;
            rst = (rst + 1) % 8;
            pred.iter_mut().for_each(|p| *p = 0);
            eobrun = 0;
        }
        let (ux, uy) = (unit % units_x, unit / units_x);
        for (si, sc) in scan.iter().enumerate() {
            let c = &mut comps[sc.ci];
            let (nh, nv) = if scan.len() == 1 { (1, 1) } else { (c.h, c.v) };
            for by in 0..nv {
                for bx in 0..nh {
                    let (x, y) = (ux * nh + bx, uy * nv + by);
                    let at = (y * c.bw + x) * 64;
                    let block = c
                        .coefs
                        .get_mut(at..at + 64)
                        .ok_or_else(|| corrupt("a block outside the image"))?;
                    if sequential {
                        sequential_block(&mut bits, sc, &mut pred[si], block)?;
                    } else if band.ss == 0 {
                        // DC: its first bits (a difference from the previous block's),
                        // or one more bit.
                        if band.ah == 0 {
                            let t = bits.decode(&sc.dc)?;
                            pred[si] = pred[si].wrapping_add(bits.receive_extend(t)?);
                            block[0] = pred[si].wrapping_shl(u32::from(band.al)) as i16;
                        } else if bits.bits(1)? == 1 {
                            block[0] |= 1 << band.al;
                        }
                    } else if band.ah == 0 {
                        ac_first(&mut bits, &sc.ac, band, &mut eobrun, block)?;
                    } else {
                        ac_refine(&mut bits, &sc.ac, band, &mut eobrun, block)?;
                    }
                }
            }
            c.scanned = true;
        }
    }
    Ok(())
}

/// One block of a sequential scan.
fn sequential_block(
    bits: &mut Bits<'_>,
    sc: &ScanComponent,
    pred: &mut i32,
    block: &mut [i16],
) -> Result<(), OpError> {
    let t = bits.decode(&sc.dc)?;
    *pred = pred.wrapping_add(bits.receive_extend(t)?);
    // libjpeg stores coefficients as 16-bit values.
    block[0] = *pred as i16;
    let mut k = 1;
    while k < 64 {
        let rs = bits.decode(&sc.ac)?;
        let (r, s) = (usize::from(rs >> 4), rs & 15);
        if s == 0 {
            if r != 15 {
                break;
            }
            k += 16;
            continue;
        }
        k += r;
        if k > 63 {
            return Err(corrupt("a block with more than 64 coefficients"));
        }
        block[ZIGZAG[k]] = bits.receive_extend(s)? as i16;
        k += 1;
    }
    Ok(())
}

/// The length of an end-of-band run: `2^r` plus `r` more bits.
fn eob_run(bits: &mut Bits<'_>, r: u8) -> Result<u32, OpError> {
    Ok((1u32 << r) + bits.bits(u32::from(r))?)
}

/// One block of a first AC scan (libjpeg's `decode_mcu_AC_first`).
fn ac_first(
    bits: &mut Bits<'_>,
    table: &Huffman,
    band: Band,
    eobrun: &mut u32,
    block: &mut [i16],
) -> Result<(), OpError> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = band.ss;
    while k <= band.se {
        let rs = bits.decode(table)?;
        let (r, s) = (rs >> 4, rs & 15);
        if s != 0 {
            k += usize::from(r);
            if k > band.se {
                return Err(corrupt("a coefficient past the scan's band"));
            }
            block[ZIGZAG[k]] = bits.receive_extend(s)?.wrapping_shl(u32::from(band.al)) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            // This block ends the band, and as many more as the run says.
            *eobrun = eob_run(bits, r)? - 1;
            break;
        }
        k += 1;
    }
    Ok(())
}

/// One block of a refining AC scan (libjpeg's `decode_mcu_AC_refine`): correction bits
/// for the coefficients already nonzero, and new coefficients of magnitude `2^al`.
fn ac_refine(
    bits: &mut Bits<'_>,
    table: &Huffman,
    band: Band,
    eobrun: &mut u32,
    block: &mut [i16],
) -> Result<(), OpError> {
    let p1: i16 = 1 << band.al;
    let mut k = band.ss;
    if *eobrun == 0 {
        while k <= band.se {
            let rs = bits.decode(table)?;
            let (mut r, s) = (i32::from(rs >> 4), rs & 15);
            let new = match s {
                0 if r != 15 => {
                    *eobrun = eob_run(bits, r as u8)?;
                    break;
                }
                0 => 0,
                1 => {
                    if bits.bits(1)? == 1 {
                        p1
                    } else {
                        -p1
                    }
                }
                _ => return Err(corrupt("a refining coefficient of more than one bit")),
            };
            // Past the coefficients already nonzero (each with its correction bit) and
            // `r` zero ones, to the next zero one.
            while k <= band.se {
                let v = &mut block[ZIGZAG[k]];
                if *v != 0 {
                    refine(bits, v, p1)?;
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if new != 0 {
                if k > band.se {
                    return Err(corrupt("a coefficient past the scan's band"));
                }
                block[ZIGZAG[k]] = new;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        // The rest of the band: correction bits only.
        while k <= band.se {
            let v = &mut block[ZIGZAG[k]];
            if *v != 0 {
                refine(bits, v, p1)?;
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}

// The accurate integer inverse DCT of libjpeg (`jidctint.c`): constants scaled by 2^13.
const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// `x / 2^n`, rounded half up (libjpeg's `DESCALE`).
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// One 1-D pass of the inverse DCT over `x` (eight values, already scaled as the pass
/// takes them), giving the eight outputs before descaling.
#[inline(always)]
fn idct_1d(x: [i64; 8]) -> [i64; 8] {
    // Even part.
    let (z2, z3) = (x[2], x[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
    let z5 = (z3 + z4) * FIX_1_175875602;
    let t0 = t0 * FIX_0_298631336;
    let t1 = t1 * FIX_2_053119869;
    let t2 = t2 * FIX_3_072711026;
    let t3 = t3 * FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    let (t0, t1, t2, t3) = (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4);
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// The sample of a descaled inverse-DCT output `x` (centred on 0): `x + 128` clamped
/// to 0..=255, as libjpeg-turbo's SIMD code (which Pillow runs) gives it. libjpeg's C
/// code clamps the same within ±512 and wraps modulo 1024 beyond (`range_limit[x &
/// 1023]`); no encoder reaches that from 8-bit pixels.
fn range_limit(x: i64) -> u8 {
    (x + 128).clamp(0, 255) as u8
}

/// Dequantizes and inverse-transforms `block` (natural order) into the 8×8 samples at
/// `out` (rows `stride` apart).
///
/// A column (first pass) or row (second pass) whose terms after the first are all zero
/// transforms to its first term scaled, as libjpeg's shortcuts take it: `x0 << PASS1_BITS`
/// in the first pass, `DESCALE(x0, PASS1_BITS + 3)` in the second. Both are what the
/// full pass gives such a line (its even part is `x0 << CONST_BITS`, its odd part
/// zero), so the shortcuts change no value; most columns and rows of a photo's blocks
/// take them.
#[inline(always)]
fn idct_islow(block: &[i16; 64], q: &[i32; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for col in 0..8 {
        let x: [i64; 8] =
            std::array::from_fn(|r| i64::from(i32::from(block[r * 8 + col]) * q[r * 8 + col]));
        if x[1..].iter().all(|&v| v == 0) {
            // libjpeg's workspace is `int`.
            let dc = (x[0] << PASS1_BITS) as i32;
            for r in 0..8 {
                ws[r * 8 + col] = dc;
            }
            continue;
        }
        for (r, v) in idct_1d(x).iter().enumerate() {
            ws[r * 8 + col] = descale(*v, CONST_BITS - PASS1_BITS) as i32;
        }
    }
    for row in 0..8 {
        let x: [i64; 8] = std::array::from_fn(|c| i64::from(ws[row * 8 + c]));
        if let Some(line) = out.get_mut(row * stride..row * stride + 8) {
            if x[1..].iter().all(|&v| v == 0) {
                line.fill(range_limit(descale(x[0], PASS1_BITS + 3)));
                continue;
            }
            for (o, v) in line.iter_mut().zip(idct_1d(x)) {
                *o = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
            }
        }
    }
}

/// A component's `dw × dh` real samples, in `plane` with rows `pw` apart.
struct Samples<'a> {
    plane: &'a [u8],
    pw: usize,
    dw: usize,
    dh: usize,
}

impl Samples<'_> {
    /// Line `y` of the real samples (`dw` of them), the last line replicated below the
    /// real ones (as libjpeg's context rows are); empty if the plane is short, which a
    /// well-formed call never is.
    fn line(&self, y: usize) -> &[u8] {
        let y = y.min(self.dh.saturating_sub(1));
        self.plane
            .get(y * self.pw..y * self.pw + self.dw)
            .unwrap_or(&[])
    }

    /// The samples upsampled by `(fx, fy)` and cropped to the image's `w × h`, as
    /// libjpeg's `jdsample.c` does with fancy upsampling on: triangular filters for 2×1,
    /// 1×2 and 2×2 (2×1 and 2×2 only over more than two samples per line), replication
    /// for other integral factors. Samples past the right edge replicate the last.
    fn upsample(&self, fx: usize, fy: usize, w: usize, h: usize) -> Vec<u8> {
        simd::with_fma(
            #[inline(always)]
            || self.upsample_lines(fx, fy, w, h),
        )
    }

    /// [`Samples::upsample`], compiled for the instruction set `simd::with_fma` picks
    /// (integer arithmetic only: the same values on any).
    #[inline(always)]
    fn upsample_lines(&self, fx: usize, fy: usize, w: usize, h: usize) -> Vec<u8> {
        let mut out = vec![0u8; w * h];
        let (dw, fancy_h) = (self.dw, self.dw > 2);
        // Sample `x` of `line`, the last one replicated to the right.
        fn at(line: &[u8], x: usize) -> i32 {
            let x = x.min(line.len().saturating_sub(1));
            i32::from(line.get(x).copied().unwrap_or(0))
        }
        // Column sums of the 2×2 filter, one line of them at a time.
        let mut sums = vec![0i32; if (fx, fy) == (2, 2) { dw } else { 0 }];
        for (oy, out) in out.chunks_mut(w.max(1)).enumerate() {
            match (fx, fy) {
                (1, 1) => {
                    let line = self.line(oy);
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = at(line, ox) as u8;
                    }
                }
                (2, 1) if fancy_h => {
                    let line = self.line(oy);
                    for (i, pair) in out.chunks_mut(2).enumerate() {
                        let v = at(line, i);
                        let left = if i == 0 {
                            v
                        } else {
                            (v * 3 + at(line, i - 1) + 1) >> 2
                        };
                        let right = if i == dw - 1 {
                            v
                        } else {
                            (v * 3 + at(line, i + 1) + 2) >> 2
                        };
                        put_pair(pair, left, right);
                    }
                }
                (1, 2) => {
                    let (i, below) = (oy / 2, oy % 2 == 1);
                    let (other, bias) = if below {
                        (i + 1, 2)
                    } else {
                        (i.saturating_sub(1), 1)
                    };
                    let (near, far) = (self.line(i), self.line(other));
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = ((at(near, ox) * 3 + at(far, ox) + bias) >> 2) as u8;
                    }
                }
                (2, 2) if fancy_h => {
                    let (i, below) = (oy / 2, oy % 2 == 1);
                    let other = if below { i + 1 } else { i.saturating_sub(1) };
                    let (near, far) = (self.line(i), self.line(other));
                    for (x, sum) in sums.iter_mut().enumerate() {
                        *sum = at(near, x) * 3 + at(far, x);
                    }
                    let sum = |x: usize| sums.get(x.min(dw - 1)).copied().unwrap_or(0);
                    for (j, pair) in out.chunks_mut(2).enumerate() {
                        let this = sum(j);
                        let left = if j == 0 {
                            (this * 4 + 8) >> 4
                        } else {
                            (this * 3 + sum(j - 1) + 8) >> 4
                        };
                        let right = if j == dw - 1 {
                            (this * 4 + 7) >> 4
                        } else {
                            (this * 3 + sum(j + 1) + 7) >> 4
                        };
                        put_pair(pair, left, right);
                    }
                }
                _ => {
                    let line = self.line(oy / fy);
                    for (ox, o) in out.iter_mut().enumerate() {
                        *o = at(line, ox / fx) as u8;
                    }
                }
            }
        }
        out
    }
}

/// The two outputs of one sample upsampled 2× across, into `pair` (one value at the
/// image's right edge when its width is odd).
fn put_pair(pair: &mut [u8], left: i32, right: i32) {
    if let Some(o) = pair.first_mut() {
        *o = left as u8;
    }
    if let Some(o) = pair.get_mut(1) {
        *o = right as u8;
    }
}

/// libjpeg's YCbCr → RGB conversion (`jdcolor.c`, 16 fractional bits): its tables'
/// entries, `(FIX(1.40200)·(Cr − 128) + ONE_HALF) >> 16` and the like, computed per
/// pixel in 32-bit arithmetic (exact: every product is below 2^24), which the compiler
/// can vectorize where table lookups cannot be. The tests check every (Cb, Cr) against
/// the tables as libjpeg builds them.
#[inline(always)]
fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const ONE_HALF: i32 = 1 << 15;
    // FIX(x) = round(x · 2^16) of 1.40200, 1.77200, 0.71414 and 0.34414.
    const R_CR: i32 = 91881;
    const B_CB: i32 = 116130;
    const G_CR: i32 = 46802;
    const G_CB: i32 = 22554;
    let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
    let clamp = |v: i32| v.clamp(0, 255) as u8;
    [
        clamp(y + ((R_CR * cr + ONE_HALF) >> 16)),
        clamp(y + ((-G_CB * cb + ONE_HALF - G_CR * cr) >> 16)),
        clamp(y + ((B_CB * cb + ONE_HALF) >> 16)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libjpeg's YCbCr → RGB tables, built as `jdcolor.c` builds them (in 64-bit
    /// arithmetic, as its `JLONG`).
    struct ColorTables {
        cr_r: [i32; 256],
        cb_b: [i32; 256],
        cr_g: [i32; 256],
        cb_g: [i32; 256],
    }

    impl ColorTables {
        fn new() -> ColorTables {
            const SCALEBITS: u32 = 16;
            const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
            // FIX(x) = round(x · 2^16) of 1.40200, 1.77200, 0.71414 and 0.34414.
            const R_CR: i64 = 91881;
            const B_CB: i64 = 116130;
            const G_CR: i64 = 46802;
            const G_CB: i64 = 22554;
            let mut t = ColorTables {
                cr_r: [0; 256],
                cb_b: [0; 256],
                cr_g: [0; 256],
                cb_g: [0; 256],
            };
            for i in 0..256 {
                let x = i as i64 - 128;
                t.cr_r[i] = ((R_CR * x + ONE_HALF) >> SCALEBITS) as i32;
                t.cb_b[i] = ((B_CB * x + ONE_HALF) >> SCALEBITS) as i32;
                t.cr_g[i] = (-G_CR * x) as i32;
                t.cb_g[i] = (-G_CB * x + ONE_HALF) as i32;
            }
            t
        }

        fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
            let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
            let clamp = |v: i32| v.clamp(0, 255) as u8;
            [
                clamp(y + self.cr_r[cr]),
                clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)),
                clamp(y + self.cb_b[cb]),
            ]
        }
    }

    /// libjpeg's `prepare_range_limit_table` (`jdmaster.c`), built as it builds it:
    /// the post-IDCT table is indexed by `x & 1023` from `CENTERJSAMPLE` in. Within
    /// ±512 it is the clamp; beyond, its C code wraps where its SIMD code clamps.
    #[test]
    fn range_limit_is_libjpegs_table_within_its_range() {
        let mut simple = vec![0u8; 256]; // limit[x] = 0 for x < 0
        simple.extend((0..=255).map(|i| i as u8));
        simple.extend(std::iter::repeat_n(255u8, 384));
        simple.extend(std::iter::repeat_n(0u8, 384));
        simple.extend(0..128u8);
        // `table` points 256 in; the IDCT's table 128 further.
        let idct = &simple[256 + 128..];
        for x in -512i64..512 {
            assert_eq!(range_limit(x), idct[(x & 1023) as usize], "{x}");
        }
        assert_eq!((range_limit(-3000), range_limit(3000)), (0, 255));
    }

    /// `idct_islow` without its shortcuts: every column and row through the full pass.
    fn idct_full(block: &[i16; 64], q: &[i32; 64]) -> [u8; 64] {
        let mut ws = [0i32; 64];
        for col in 0..8 {
            let x: [i64; 8] =
                std::array::from_fn(|r| i64::from(i32::from(block[r * 8 + col]) * q[r * 8 + col]));
            for (r, v) in idct_1d(x).iter().enumerate() {
                ws[r * 8 + col] = descale(*v, CONST_BITS - PASS1_BITS) as i32;
            }
        }
        let mut out = [0u8; 64];
        for row in 0..8 {
            let x: [i64; 8] = std::array::from_fn(|c| i64::from(ws[row * 8 + c]));
            for (c, v) in idct_1d(x).into_iter().enumerate() {
                out[row * 8 + c] = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
            }
        }
        out
    }

    proptest::proptest! {
        /// The shortcuts for lines whose terms after the first are zero give what the
        /// full passes give: blocks with most coefficients zero (as a photo's are), and
        /// whole rows and columns zero (`rows`, `cols`: which may hold any), any
        /// quantization, coefficients up to the largest an i16 holds.
        #[test]
        fn idct_shortcuts_change_no_value(
            rows in proptest::prop_oneof![proptest::strategy::Just(1u8), proptest::num::u8::ANY],
            cols in proptest::prop_oneof![proptest::strategy::Just(1u8), proptest::num::u8::ANY],
            coefs in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::strategy::Just(0i16),
                    3 => -64i16..64,
                    1 => proptest::num::i16::ANY,
                ],
                64,
            ),
            quant in proptest::collection::vec(
                proptest::prop_oneof![4 => 1i32..=255, 1 => 0i32..=65535],
                64,
            ),
        ) {
            let live = |i: usize| rows >> (i / 8) & 1 == 1 && cols >> (i % 8) & 1 == 1;
            let block: [i16; 64] = std::array::from_fn(|i| if live(i) { coefs[i] } else { 0 });
            let q: [i32; 64] = std::array::from_fn(|i| quant[i]);
            let mut out = [0u8; 64];
            idct_islow(&block, &q, &mut out, 8);
            proptest::prop_assert_eq!(out, idct_full(&block, &q));
        }
    }

    #[test]
    fn a_dc_only_block_is_flat() {
        let q = [1i32; 64];
        for dc in [-1024i16, -300, -8, 0, 5, 8, 100, 1016, 2000] {
            let mut block = [0i16; 64];
            block[0] = dc;
            let mut out = [0u8; 64];
            idct_islow(&block, &q, &mut out, 8);
            // DC / 8 rounded half up, plus 128, clamped.
            let want = (((i64::from(dc) * 4 + 16) >> 5) + 128).clamp(0, 255) as u8;
            assert!(out.iter().all(|&v| v == want), "{dc}: {out:?}");
        }
    }

    #[test]
    fn color_conversion_is_libjpegs_tables() {
        let t = ColorTables::new();
        for cb in 0..=255u8 {
            for cr in 0..=255u8 {
                for y in [0u8, 1, 77, 128, 200, 254, 255] {
                    assert_eq!(ycc_to_rgb(y, cb, cr), t.rgb(y, cb, cr), "{y} {cb} {cr}");
                }
            }
        }
    }

    #[test]
    fn color_tables_match_the_formulas() {
        let t = ColorTables::new();
        // Neutral chroma keeps the luma.
        for y in [0u8, 1, 128, 254, 255] {
            assert_eq!(t.rgb(y, 128, 128), [y, y, y]);
        }
        // Pure red in JFIF YCbCr (76, 85, 255).
        assert_eq!(t.rgb(76, 85, 255), [254, 0, 0]);
        // Cb = Cr = 255: G = 255 + ((-22554·127 + 2^15 - 46802·127) >> 16) = 255 - 134.
        assert_eq!(t.rgb(255, 255, 255), [255, 121, 255]);
    }

    #[test]
    fn upsampling_2x2_at_the_edges() {
        // Two lines of three samples: libjpeg's h2v2 fancy filter.
        let plane = [10u8, 20, 40, 50, 70, 90];
        let s = Samples {
            plane: &plane,
            pw: 3,
            dw: 3,
            dh: 2,
        };
        let up = s.upsample(2, 2, 6, 4);
        // Row 0: nearest line 0, other line 0 (the top replicated); colsums 40, 80,
        // 160: (40·4 + 8) >> 4, (40·3 + 80 + 7) >> 4, (80·3 + 40 + 8) >> 4, …
        assert_eq!(&up[..6], &[10, 12, 18, 25, 35, 40]);
        // Row 1: nearest line 0, other line 1.
        let cs = [3 * 10 + 50, 3 * 20 + 70, 3 * 40 + 90];
        let want1 = [
            (cs[0] * 4 + 8) >> 4,
            (cs[0] * 3 + cs[1] + 7) >> 4,
            (cs[1] * 3 + cs[0] + 8) >> 4,
            (cs[1] * 3 + cs[2] + 7) >> 4,
            (cs[2] * 3 + cs[1] + 8) >> 4,
            (cs[2] * 4 + 7) >> 4,
        ];
        let got: Vec<i32> = up[6..12].iter().map(|&v| i32::from(v)).collect();
        assert_eq!(got, want1);
    }
}
