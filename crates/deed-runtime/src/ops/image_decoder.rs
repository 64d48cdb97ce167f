//! `ImageDecoder` (opset 20): an encoded image to an `[H, W, C]` u8 tensor.
//!
//! The formats decoded are the ones whose pixels their specification fixes to the bit:
//! BMP, PNG, PNM (PBM, PGM, PPM, PAM), losslessly compressed TIFF, and WebP (lossless,
//! and lossy, whose VP8 reconstruction RFC 6386 defines exactly), decoded by the
//! `image`, `png`, `tiff` and `image-webp` crates, pinned exactly in the workspace;
//! and JPEG (baseline and progressive), whose standard lets decoders differ in the
//! last bits (the inverse DCT, the chroma upsampling): [`jpeg`] decodes it as libjpeg
//! does with its defaults, in integer arithmetic of its own. JPEG 2000 is refused.
//! This module turns the samples into the output with arithmetic of its own (see
//! `docs/canonical-semantics.md`).
//!
//! The output shape is the image's, so the encoded bytes must be known while planning:
//! a graph input of up to [`crate::plan::KNOWN_BYTES_MAX`] bytes is, and the plan then
//! holds for those bytes. Planning reads the header only: the dimensions, checked
//! against the run's limits before any pixel is decoded.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use deed_types::{DType, Tensor};
use image::{ColorType, DynamicImage, ImageDecoder as _, ImageFormat, ImageReader};

use crate::error::OpError;
use crate::limits::Limits;
use crate::ops::util::{check_count, check_dtype, infer_input, input, need_value, one};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

mod jpeg;

/// The output's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PixelFormat {
    Rgb,
    Bgr,
    Grayscale,
}

impl PixelFormat {
    fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Grayscale => 1,
        }
    }
}

/// `ImageDecoder`.
#[derive(Debug)]
pub(crate) struct ImageDecoder {
    format: PixelFormat,
}

/// Builds `ImageDecoder`.
pub(crate) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let format = match n.attrs.string("pixel_format", "RGB")?.as_str() {
        "RGB" => PixelFormat::Rgb,
        "BGR" => PixelFormat::Bgr,
        "Grayscale" => PixelFormat::Grayscale,
        other => {
            return Err(OpError::bad_attr(
                "pixel_format",
                format!("must be RGB, BGR or Grayscale, got {other:?}"),
            ))
        }
    };
    Ok(Box::new(ImageDecoder { format }))
}

/// An encoded image's format: one the `image` crate decodes, or JPEG, which [`jpeg`]
/// decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Image(ImageFormat),
    Jpeg,
}

/// The format of `bytes` by its signature; JPEG 2000 and anything unknown are refused.
fn sniff(bytes: &[u8]) -> Result<Format, OpError> {
    let pnm = bytes.len() > 2
        && bytes[0] == b'P'
        && (b'1'..=b'7').contains(&bytes[1])
        && bytes[2].is_ascii_whitespace();
    let riff_webp = bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP";
    Ok(Format::Image(if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ImageFormat::Png
    } else if bytes.starts_with(b"BM") {
        ImageFormat::Bmp
    } else if pnm {
        ImageFormat::Pnm
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        ImageFormat::Tiff
    } else if riff_webp {
        ImageFormat::WebP
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return Ok(Format::Jpeg);
    } else if bytes.starts_with(b"\0\0\0\x0cjP  \r\n\x87\n")
        || bytes.starts_with(&[0xff, 0x4f, 0xff, 0x51])
    {
        return Err(OpError::unsupported(
            "JPEG 2000 images: JPEG 2000 decoders may differ in the last bits, so none is canonical",
        ));
    } else {
        return Err(OpError::value(
            "the input is not a BMP, JPEG, PNG, PNM, TIFF or WebP image",
        ));
    }))
}

/// TIFF compressions decoded: none, CCITT fax (2–4), LZW, Deflate (8 and the older
/// 32946) and PackBits. Others (JPEG above all) are refused.
const TIFF_COMPRESSIONS: [u16; 8] = [1, 2, 3, 4, 5, 8, 32773, 32946];

/// Refuses a TIFF whose first image is compressed other than losslessly.
fn check_tiff(bytes: &[u8]) -> Result<(), OpError> {
    let bad = |e: tiff::TiffError| OpError::value(format!("the TIFF image cannot be read: {e}"));
    let c = catch_unwind(|| -> tiff::TiffResult<u16> {
        let mut d = tiff::decoder::Decoder::new(Cursor::new(bytes))?;
        let c = d.find_tag(tiff::tags::Tag::Compression)?;
        Ok(c.map(|v| v.into_u16()).transpose()?.unwrap_or(1))
    })
    .map_err(|_| OpError::value("the TIFF decoder failed on this input"))?
    .map_err(bad)?;
    if TIFF_COMPRESSIONS.contains(&c) {
        Ok(())
    } else {
        Err(OpError::unsupported(format!(
            "TIFF compression {c} (only uncompressed, CCITT, LZW, Deflate and PackBits \
             images are decoded)"
        )))
    }
}

/// What an image's header says.
struct Header {
    format: Format,
    width: u32,
    height: u32,
    /// A JPEG's working memory (see [`jpeg::Info::work_bytes`]).
    work_bytes: Option<u64>,
}

/// Working memory the decoders may take while reading a header (its metadata chunks).
const HEADER_ALLOC: u64 = 1 << 26;

/// A reader of `bytes` in `format` that may take at most `max_alloc` bytes.
fn reader(bytes: &[u8], format: ImageFormat, max_alloc: u64) -> ImageReader<Cursor<&[u8]>> {
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    r.limits(limits);
    r
}

fn undecodable(e: image::ImageError) -> OpError {
    OpError::value(format!("the image cannot be decoded: {e}"))
}

/// Reads the header of `bytes`, refusing what is not decoded (see the module docs) and
/// images of floating-point samples.
fn header(bytes: &[u8]) -> Result<Header, OpError> {
    let format = match sniff(bytes)? {
        Format::Jpeg => {
            let i = jpeg::info(bytes)?;
            return Ok(Header {
                format: Format::Jpeg,
                width: i.width,
                height: i.height,
                work_bytes: Some(i.work_bytes),
            });
        }
        Format::Image(f) => f,
    };
    if format == ImageFormat::Tiff {
        check_tiff(bytes)?;
    }
    let decoder = catch_unwind(AssertUnwindSafe(|| {
        reader(bytes, format, HEADER_ALLOC).into_decoder()
    }))
    .map_err(|_| OpError::value("the image decoder failed on this input"))?
    .map_err(undecodable)?;
    if matches!(decoder.color_type(), ColorType::Rgb32F | ColorType::Rgba32F) {
        return Err(OpError::unsupported("images of floating-point samples"));
    }
    let (width, height) = decoder.dimensions();
    Ok(Header {
        format: Format::Image(format),
        width,
        height,
        work_bytes: None,
    })
}

/// A 16-bit sample as 8 bits: `round(v / 257)` (`v / 257` is never halfway between
/// two integers).
fn narrow(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// ITU-R 601-2 luma of an 8-bit RGB pixel, as Pillow's `convert("L")` computes it:
/// `(19595·R + 38470·G + 7471·B + 32768) >> 16`.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b) + 32768) >> 16) as u8
}

/// The decoded image's 8-bit samples: one per pixel (`true`, a gray image) or three
/// (red, green, blue); alpha is dropped, not composited.
fn samples(img: DynamicImage) -> Result<(bool, Vec<u8>), OpError> {
    fn every<T: Copy, U>(v: &[T], step: usize, take: usize, f: impl Fn(T) -> U) -> Vec<U> {
        v.chunks_exact(step)
            .flat_map(|p| p[..take].iter().map(|&x| f(x)))
            .collect()
    }
    Ok(match img {
        DynamicImage::ImageLuma8(b) => (true, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (true, every(&b.into_raw(), 2, 1, |x| x)),
        DynamicImage::ImageRgb8(b) => (false, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (false, every(&b.into_raw(), 4, 3, |x| x)),
        DynamicImage::ImageLuma16(b) => (true, every(&b.into_raw(), 1, 1, narrow)),
        DynamicImage::ImageLumaA16(b) => (true, every(&b.into_raw(), 2, 1, narrow)),
        DynamicImage::ImageRgb16(b) => (false, every(&b.into_raw(), 3, 3, narrow)),
        DynamicImage::ImageRgba16(b) => (false, every(&b.into_raw(), 4, 3, narrow)),
        _ => return Err(OpError::unsupported("images of floating-point samples")),
    })
}

/// Bytes of working memory a decoder may take for an image of `pixels` pixels: room
/// for four 16-bit samples per pixel, and some for its tables.
fn max_alloc(pixels: u64) -> u64 {
    pixels.saturating_mul(8).saturating_add(1 << 20)
}

impl ImageDecoder {
    /// The output shape of an image with header `h`, within `limits`: its values within
    /// the tensor limit, a JPEG's working memory within the activation limit.
    fn shape(&self, h: &Header, limits: &Limits) -> Result<Vec<usize>, OpError> {
        let c = self.format.channels();
        let elements = u64::from(h.width)
            .saturating_mul(u64::from(h.height))
            .saturating_mul(c as u64);
        if elements > limits.max_tensor_elements {
            return Err(OpError::value(format!(
                "a {}×{} image has {elements} values, more than the limit of {}",
                h.width, h.height, limits.max_tensor_elements
            )));
        }
        if let Some(need) = h.work_bytes {
            if need > limits.max_activation_bytes {
                return Err(jpeg::too_large(
                    h.width,
                    h.height,
                    need,
                    limits.max_activation_bytes,
                ));
            }
        }
        Ok(vec![h.height as usize, h.width as usize, c])
    }

    /// The output values of the image `bytes`, whose header is `h`.
    fn decode(&self, bytes: &[u8], h: &Header, limits: &Limits) -> Result<Vec<u8>, OpError> {
        let c = self.format.channels();
        let pixels = u64::from(h.width) * u64::from(h.height);
        let failed = |_| OpError::value("the image decoder failed on this input");
        let (gray, s) = match h.format {
            Format::Jpeg => {
                let p = catch_unwind(|| jpeg::decode(bytes, limits.max_activation_bytes))
                    .map_err(failed)??;
                (p.gray, p.samples)
            }
            Format::Image(f) => {
                let r = reader(bytes, f, max_alloc(pixels));
                let img = catch_unwind(AssertUnwindSafe(|| r.decode()))
                    .map_err(failed)?
                    .map_err(undecodable)?;
                if (img.width(), img.height()) != (h.width, h.height) {
                    return Err(OpError::value("the image's size differs from its header's"));
                }
                samples(img)?
            }
        };
        let out: Vec<u8> = match (self.format, gray) {
            (PixelFormat::Grayscale, true) | (PixelFormat::Rgb, false) => s,
            (PixelFormat::Grayscale, false) => {
                s.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect()
            }
            (PixelFormat::Rgb | PixelFormat::Bgr, true) => {
                s.iter().flat_map(|&v| [v, v, v]).collect()
            }
            (PixelFormat::Bgr, false) => {
                s.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect()
            }
        };
        if out.len() as u64 != pixels * c as u64 {
            return Err(OpError::value(
                "the decoder gave fewer samples than the image has",
            ));
        }
        Ok(out)
    }
}

/// Checks that input 0 is a 1-D u8 tensor, as `encoded_stream` must be.
fn check_stream(dtype: DType, shape: &[usize]) -> Result<(), OpError> {
    check_dtype(0, dtype, &[DType::U8])?;
    if shape.len() != 1 {
        return Err(OpError::shape(format!(
            "encoded_stream must be 1-D, got shape {shape:?}"
        )));
    }
    Ok(())
}

/// The encoded bytes of input 0.
fn encoded(t: &Tensor) -> Result<&[u8], OpError> {
    check_stream(t.dtype(), t.shape())?;
    t.as_slice::<u8>().ok_or(OpError::DType {
        index: 0,
        dtype: t.dtype(),
    })
}

impl Op for ImageDecoder {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        self.infer_within(inputs, &Limits::default())
    }

    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_stream(x.ty.dtype, &x.ty.shape)?;
        let h = header(encoded(need_value(x, 0)?)?)?;
        one(DType::U8, self.shape(&h, limits)?)
    }

    /// Eight units per encoded byte and per output value: decoding does more per byte
    /// than an elementwise operator does per element.
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let i: u64 = inputs.iter().flatten().map(|t| t.numel()).sum();
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        i.saturating_add(o).saturating_mul(8).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let bytes = encoded(input(inputs, 0)?)?;
        let h = header(bytes)?;
        let shape = self.shape(&h, ctx.limits())?;
        Ok(vec![Tensor::from_vec(
            shape,
            self.decode(bytes, &h, ctx.limits())?,
        )?])
    }

    fn nans_canonical(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;
    use crate::ops::testing::{attrs, infer_one, run_one};
    use proptest::prelude::*;

    fn build_for(format: &str) -> Result<Box<dyn Op>, OpError> {
        let a = attrs(&[("pixel_format", Attr::String(format.as_bytes().to_vec()))]);
        build(&NodeInfo {
            name: "d",
            op_type: "ImageDecoder",
            domain: "",
            opset: 20,
            attrs: &a,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    fn op(format: &str) -> Box<dyn Op> {
        build_for(format).unwrap()
    }

    fn stream(bytes: &[u8]) -> Tensor {
        Tensor::from_vec(vec![bytes.len()], bytes.to_vec()).unwrap()
    }

    /// A PNG of `w × h` pixels of `color` (8 or 16 bits) holding `data`.
    fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    /// Decodes `bytes` as `format`, planning with the bytes known; the values and shape.
    fn decode(format: &str, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), OpError> {
        let out = run_one(op(format).as_ref(), &stream(bytes), true)?;
        Ok((
            out[0].shape().to_vec(),
            out[0].as_slice::<u8>().unwrap().to_vec(),
        ))
    }

    #[test]
    fn rgb_pixels_in_each_pixel_format() {
        // 3 × 2 pixels.
        let rgb: Vec<u8> = (0..18u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(5))
            .collect();
        let bytes = png(3, 2, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        let (shape, got) = decode("RGB", &bytes).unwrap();
        assert_eq!((shape, got), (vec![2, 3, 3], rgb.clone()));
        let (_, bgr) = decode("BGR", &bytes).unwrap();
        let want: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(bgr, want);
        let (shape, gray) = decode("Grayscale", &bytes).unwrap();
        assert_eq!(shape, [2, 3, 1]);
        let want: Vec<u8> = rgb
            .chunks(3)
            .map(|p| {
                let l = 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                l.round() as u8
            })
            .collect();
        // The fixed-point luma is within rounding of ITU-R 601-2's.
        for (g, w) in gray.iter().zip(&want) {
            assert!(g.abs_diff(*w) <= 1, "{gray:?} {want:?}");
        }
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(10, 200, 30), 124);
    }

    #[test]
    fn alpha_is_dropped_gray_is_replicated_and_16_bits_are_rounded() {
        // Gray + alpha, 16 bits, big-endian: 2 × 1 pixels.
        let samples: [u16; 4] = [0x0080, 0xffff, 0x8000, 0x0000];
        let data: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = png(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Sixteen,
            &data,
        );
        let (shape, rgb) = decode("RGB", &bytes).unwrap();
        assert_eq!(shape, [1, 2, 3]);
        // 0x0080 = 128 → round(128 / 257) = 0; 0x8000 = 32768 → round(127.5…) = 128.
        assert_eq!(rgb, [0, 0, 0, 128, 128, 128]);
        assert_eq!(decode("Grayscale", &bytes).unwrap().1, [0, 128]);
        for v in [0u16, 128, 129, 385, 386, 32767, 32768, 65535] {
            assert_eq!(u32::from(narrow(v)), (f64::from(v) / 257.0).round() as u32);
        }
        // RGBA, 8 bits: the color samples as stored, whatever the alpha.
        let bytes = png(
            1,
            1,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &[9, 8, 7, 0],
        );
        assert_eq!(decode("RGB", &bytes).unwrap().1, [9, 8, 7]);
    }

    #[test]
    fn bmp_pnm_and_webp() {
        // PPM, 2 × 1.
        let ppm = b"P6\n2 1\n255\n\x01\x02\x03\xfa\xfb\xfc";
        assert_eq!(
            decode("BGR", ppm).unwrap(),
            (vec![1, 2, 3], vec![3, 2, 1, 0xfc, 0xfb, 0xfa])
        );
        // PGM of 16-bit samples (big-endian), 1 × 2.
        let pgm = b"P5\n1 2\n65535\n\x01\x00\xff\xff";
        assert_eq!(
            decode("Grayscale", pgm).unwrap(),
            (vec![2, 1, 1], vec![1, 255])
        );
        // A 24-bit BMP written by the encoder `image` ships, and a lossless WebP.
        let rgb: Vec<u8> = (0..12u8).map(|i| i * 20).collect();
        let img = image::RgbImage::from_raw(2, 2, rgb.clone()).unwrap();
        for format in [ImageFormat::Bmp, ImageFormat::WebP] {
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            assert_eq!(
                decode("RGB", &bytes).unwrap(),
                (vec![2, 2, 3], rgb.clone()),
                "{format:?}"
            );
        }
    }

    const JPEG: &[u8] = include_bytes!("../../tests/fixtures/jpeg/rst_420.jpg");
    const JPEG_RGB: &[u8] = include_bytes!("../../tests/fixtures/jpeg/rst_420.rgb");
    const PROGRESSIVE: &[u8] = include_bytes!("../../tests/fixtures/jpeg/progressive.jpg");
    const PROGRESSIVE_RGB: &[u8] = include_bytes!("../../tests/fixtures/jpeg/progressive.rgb");

    #[test]
    fn progressive_jpeg() {
        assert_eq!(
            decode("RGB", PROGRESSIVE).unwrap(),
            (vec![20, 37, 3], PROGRESSIVE_RGB.to_vec())
        );
    }

    #[test]
    fn jpeg_with_restart_markers_in_each_pixel_format() {
        assert_eq!(
            decode("RGB", JPEG).unwrap(),
            (vec![20, 37, 3], JPEG_RGB.to_vec())
        );
        let bgr: Vec<u8> = JPEG_RGB
            .chunks(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        assert_eq!(decode("BGR", JPEG).unwrap().1, bgr);
        let gray: Vec<u8> = JPEG_RGB.chunks(3).map(|p| luma(p[0], p[1], p[2])).collect();
        assert_eq!(decode("Grayscale", JPEG).unwrap(), (vec![20, 37, 1], gray));
    }

    #[test]
    fn refusals_name_the_problem() {
        // The frame marker made lossless (SOF3).
        let sof = JPEG.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        let mut lossless = JPEG.to_vec();
        lossless[sof + 1] = 0xc3;
        let e = decode("RGB", &lossless).unwrap_err();
        assert!(
            matches!(&e, OpError::Unsupported { .. }) && e.to_string().contains("lossless JPEG"),
            "{e}"
        );
        // A progressive image cut after its second scan: its chroma has no AC bits,
        // which libjpeg would smooth over.
        let third = PROGRESSIVE
            .windows(2)
            .enumerate()
            .filter(|(_, w)| *w == [0xff, 0xda])
            .nth(2)
            .unwrap()
            .0;
        let mut cut = PROGRESSIVE[..third].to_vec();
        cut.extend([0xff, 0xd9]);
        let e = decode("RGB", &cut).unwrap_err();
        assert!(
            matches!(&e, OpError::Unsupported { .. }) && e.to_string().contains("incomplete"),
            "{e}"
        );
        // A restart marker replaced: the interval before it cannot end.
        let rst = JPEG.windows(2).position(|w| w == [0xff, 0xd0]).unwrap();
        let mut bad = JPEG.to_vec();
        bad[rst + 1] = 0xd3;
        let e = decode("RGB", &bad).unwrap_err();
        assert!(e.to_string().contains("restart marker"), "{e}");
        // Cut inside the entropy-coded data.
        let e = decode("RGB", &JPEG[..JPEG.len() - 100]).unwrap_err();
        assert!(e.to_string().contains("JPEG data is damaged"), "{e}");
        let j2k = b"\0\0\0\x0cjP  \r\n\x87\nrest";
        let e = decode("RGB", j2k).unwrap_err();
        assert!(e.to_string().contains("JPEG 2000"), "{e}");
        let e = decode("RGB", b"GIF89a....").unwrap_err();
        assert!(matches!(e, OpError::Value { .. }), "{e}");
        // A PNG cut short: the header reads, the pixels do not.
        let rgb = vec![7u8; 3 * 64 * 64];
        let bytes = png(64, 64, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        let cut = &bytes[..bytes.len() / 2];
        let planned = infer_one(
            op("RGB").as_ref(),
            &TypeInfo::of(&stream(cut)),
            Some(&stream(cut)),
        );
        assert_eq!(planned.unwrap()[0].shape, [64, 64, 3]);
        let e = op("RGB")
            .run(&[Some(&stream(cut))], &Ctx::default())
            .unwrap_err();
        assert!(matches!(e, OpError::Value { .. }), "{e}");
        // A header claiming more pixels than the limits allow is refused before any
        // pixel is decoded.
        let mut big = png(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[1, 2, 3]);
        big[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        big[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // (The header's checksum must hold for the decoder to read it.)
        let crc = crc32(&big[12..29]);
        big[29..33].copy_from_slice(&crc.to_be_bytes());
        let x = stream(&big);
        let limits = Limits::default();
        let e = op("RGB")
            .infer_within(
                &[Some(InferInput {
                    ty: &TypeInfo::of(&x),
                    value: Some(&x),
                })],
                &limits,
            )
            .unwrap_err();
        assert!(e.to_string().contains("more than the limit"), "{e}");
        // Without the bytes the shape is unknown; other dtypes and ranks are refused.
        let ty = TypeInfo::of(&x);
        assert_eq!(
            infer_one(op("RGB").as_ref(), &ty, None),
            Err(OpError::ValueNeeded { index: 0 })
        );
        let f = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        assert!(matches!(
            infer_one(op("RGB").as_ref(), &TypeInfo::of(&f), Some(&f)),
            Err(OpError::DType { index: 0, .. })
        ));
        let m = Tensor::from_vec(vec![1, 3], vec![1u8, 2, 3]).unwrap();
        assert!(matches!(
            run_one(op("RGB").as_ref(), &m, true),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            build_for("RGBA"),
            Err(OpError::BadAttribute { .. })
        ));
    }

    #[test]
    fn tiff_with_lossy_compression_is_refused() {
        // A little-endian TIFF whose one IFD says 1 × 1 gray pixels of 8 bits,
        // compression 7 (JPEG).
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        // Its one strip (one byte) follows the IFD: 8 + 2 + 8 · 12 + 4 = 110.
        let entries: [(u16, u16, u32, u32); 8] = [
            (256, 3, 1, 1),
            (257, 3, 1, 1),
            (258, 3, 1, 8),
            (259, 3, 1, 7),
            (262, 3, 1, 1),
            (273, 4, 1, 110),
            (277, 3, 1, 1),
            (279, 4, 1, 1),
        ];
        t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, ty, count, value) in entries {
            t.extend_from_slice(&tag.to_le_bytes());
            t.extend_from_slice(&ty.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(&value.to_le_bytes());
        }
        t.extend_from_slice(&0u32.to_le_bytes());
        t.push(0x80);
        assert_eq!(t.len(), 111);
        let e = decode("RGB", &t).unwrap_err();
        assert!(
            matches!(&e, OpError::Unsupported { .. }) && e.to_string().contains("compression 7"),
            "{e}"
        );
    }

    /// CRC-32 (ISO-HDLC), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Damaged images of every format give an image or an error, never a panic,
        /// and a decoded image always has the shape planned for it.
        #[test]
        fn damaged_images_never_panic(
            format in 0usize..6,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<bool>(),
        ) {
            let rgb: Vec<u8> = (0..(6 * 5 * 3)).map(|i| (i * 7 % 251) as u8).collect();
            let img = image::RgbImage::from_raw(6, 5, rgb).unwrap();
            let formats = [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP, ImageFormat::Tiff];
            let mut bytes = Vec::new();
            match formats.get(format) {
                Some(&f) => img.write_to(&mut Cursor::new(&mut bytes), f).unwrap(),
                None if format == 4 => bytes = JPEG.to_vec(),
                None => bytes = PROGRESSIVE.to_vec(),
            }
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] ^= v;
            }
            if cut {
                bytes.truncate(bytes.len() * 2 / 3);
            }
            let x = stream(&bytes);
            let d = op("RGB");
            if let Ok(planned) = infer_one(d.as_ref(), &TypeInfo::of(&x), Some(&x)) {
                if let Ok(out) = d.run(&[Some(&x)], &Ctx::default()) {
                    prop_assert_eq!(&out[0].shape().to_vec(), &planned[0].shape);
                }
            }
        }
    }
}
