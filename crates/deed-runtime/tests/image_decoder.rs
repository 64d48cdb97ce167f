//! `ImageDecoder` in a model: the encoded image, a graph input of any size up to
//! `KNOWN_BYTES_MAX`, is known while planning, so the output shape is the image's;
//! each image gets its plan, and the trace does not depend on the thread count.

#![allow(clippy::unwrap_used)]

mod common;

use deed_runtime::{Limits, Model, RunOptions, RuntimeError};
use deed_types::Tensor;
use prost::Message;
use tract_onnx::pb;

use common::{value, FLOAT};

/// `TensorProto.DataType.UINT8`.
const UINT8: i32 = 2;

/// `img` (u8 bytes) → ImageDecoder(`pixel_format`).
fn decoder(pixel_format: &str) -> Model {
    let graph = pb::GraphProto {
        name: "decode".into(),
        node: vec![common::node(
            "decode",
            "ImageDecoder",
            &["img"],
            &["pixels"],
            vec![common::attr_string("pixel_format", pixel_format)],
        )],
        input: vec![value("img", UINT8, &[Err("n")])],
        output: vec![value("pixels", UINT8, &[Err("h"), Err("w"), Err("c")])],
        ..Default::default()
    };
    let mut m = common::model(graph);
    m.opset_import[0].version = 20;
    Model::load(&m.encode_to_vec(), &Limits::default()).unwrap()
}

/// `img` (u8 bytes) → ImageDecoder(RGB) → Cast to f32 → ReduceMean over every axis.
fn model() -> Model {
    let graph = pb::GraphProto {
        name: "decode".into(),
        node: vec![
            common::node(
                "decode",
                "ImageDecoder",
                &["img"],
                &["pixels"],
                vec![common::attr_string("pixel_format", "RGB")],
            ),
            common::node(
                "cast",
                "Cast",
                &["pixels"],
                &["f"],
                vec![common::attr_int("to", i64::from(FLOAT))],
            ),
            common::node(
                "mean",
                "ReduceMean",
                &["f"],
                &["m"],
                vec![common::attr_int("keepdims", 0)],
            ),
        ],
        input: vec![value("img", UINT8, &[Err("n")])],
        output: vec![
            value("pixels", UINT8, &[Err("h"), Err("w"), Ok(3)]),
            value("m", FLOAT, &[]),
        ],
        ..Default::default()
    };
    let mut m = common::model(graph);
    m.opset_import[0].version = 20;
    Model::load(&m.encode_to_vec(), &Limits::default()).unwrap()
}

/// A `w × h` RGB PNG of noisy pixels (so that it compresses poorly: the encoded image
/// is larger than the planner's small-input bound), and its pixels.
fn noisy_png(w: u32, h: u32, seed: u32) -> (Vec<u8>, Vec<u8>) {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let pixels: Vec<u8> = (0..w * h * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    let mut wr = e.write_header().unwrap();
    wr.write_image_data(&pixels).unwrap();
    wr.finish().unwrap();
    (out, pixels)
}

fn bytes(b: &[u8]) -> Vec<(String, Tensor)> {
    vec![(
        "img".to_owned(),
        Tensor::from_vec(vec![b.len()], b.to_vec()).unwrap(),
    )]
}

#[test]
fn each_image_is_planned_for_its_own_size() {
    let model = model();
    for (w, h, seed) in [(40, 30, 1), (7, 90, 2), (300, 256, 3)] {
        let (png, pixels) = noisy_png(w, h, seed);
        assert!(png.len() > deed_runtime::plan::KNOWN_INPUT_MAX);
        let mut roots = Vec::new();
        for threads in [1, 2, 4] {
            let out = model
                .run(
                    &bytes(&png),
                    &RunOptions {
                        threads,
                        ..RunOptions::default()
                    },
                )
                .unwrap();
            let decoded = &out.outputs[0].1;
            assert_eq!(decoded.shape(), [h as usize, w as usize, 3]);
            assert_eq!(decoded.as_slice::<u8>().unwrap(), pixels.as_slice());
            roots.push(out.trace.root());
        }
        assert!(roots.windows(2).all(|r| r[0] == r[1]), "{w}×{h}: {roots:?}");
    }
}

#[test]
fn large_images_of_every_format_decode_within_their_memory_bound() {
    let model = model();
    let (_, pixels) = noisy_png(300, 256, 4);
    let img = image::RgbImage::from_raw(300, 256, pixels.clone()).unwrap();
    for format in [
        image::ImageFormat::Bmp,
        image::ImageFormat::Pnm,
        image::ImageFormat::Tiff,
        image::ImageFormat::WebP,
    ] {
        let mut encoded = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut encoded), format)
            .unwrap();
        let out = model.run(&bytes(&encoded), &RunOptions::default()).unwrap();
        assert_eq!(out.outputs[0].1.shape(), [256, 300, 3], "{format:?}");
        assert_eq!(
            out.outputs[0].1.as_slice::<u8>().unwrap(),
            pixels.as_slice(),
            "{format:?}"
        );
    }
}

#[test]
fn refused_images_name_the_node_and_the_reason() {
    let model = model();
    let jpeg2000 = b"\0\0\0\x0cjP  \r\n\x87\n\0\0\0\x14ftypjp2 ";
    let e = model
        .run(&bytes(jpeg2000), &RunOptions::default())
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("decode") && msg.contains("JPEG 2000"), "{msg}");
    // A JPEG that ends inside its first segment.
    let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
    let e = model
        .run(&bytes(&jpeg), &RunOptions::default())
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("decode") && msg.contains("JPEG"), "{msg}");
    let e = model
        .run(&bytes(b"not an image at all"), &RunOptions::default())
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Node { .. }), "{e}");
    // An image larger than the limits allow is refused while planning.
    let (png, _) = noisy_png(64, 64, 9);
    let limits = Limits {
        max_tensor_elements: 64 * 64 * 3 - 1,
        ..Limits::default()
    };
    let e = model
        .run(
            &bytes(&png),
            &RunOptions {
                limits,
                ..RunOptions::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

/// The project's Python virtualenv (`$DEED_VENV`, else `<workspace>/.venv`), which
/// `scripts/venv.sh` makes with the pinned Pillow.
fn venv_python() -> std::path::PathBuf {
    let venv = match std::env::var_os("DEED_VENV") {
        Some(v) => std::path::PathBuf::from(v),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    };
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: run scripts/venv.sh (or set DEED_VENV)",
        python.display()
    );
    python
}

/// JPEG decodes to exactly the pixels Pillow (libjpeg-turbo, its defaults) gives, over
/// images Pillow writes (every size from 1 pixel, every quality, 4:4:4, 4:2:2 and
/// 4:2:0 chroma, gray, optimized Huffman tables, restart markers, baseline and
/// progressive) and files of random coefficients with the sampling factors Pillow
/// cannot write (4:4:0, 4:1:1, 3:1, 2:3, 1:4, luma sampled below chroma), interleaved
/// or one scan per component; the luma of `Grayscale` is Pillow's `convert("L")`.
#[test]
fn jpeg_decodes_to_the_pixels_libjpeg_gives() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/jpeg_cases.py");
    let status = std::process::Command::new(venv_python())
        .arg(&script)
        .arg(dir.path())
        .args(["120", "7"])
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    let (rgb, gray) = (decoder("RGB"), decoder("Grayscale"));
    let cases = std::fs::read_to_string(dir.path().join("cases.txt")).unwrap();
    let (mut exact, mut progressive) = (0, 0);
    for line in cases.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (name, w, h) = (
            f[0],
            f[1].parse::<usize>().unwrap(),
            f[2].parse::<usize>().unwrap(),
        );
        let jpeg = std::fs::read(dir.path().join(format!("{name}.jpg"))).unwrap();
        for (model, ext, c) in [(&rgb, "rgb", 3), (&gray, "l", 1)] {
            let out = model
                .run(&bytes(&jpeg), &RunOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = std::fs::read(dir.path().join(format!("{name}.{ext}"))).unwrap();
            assert_eq!(out.outputs[0].1.shape(), [h, w, c], "{name}");
            let got = out.outputs[0].1.as_slice::<u8>().unwrap();
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{name} ({ext}): {differ} of {} values differ",
                want.len()
            );
            exact += 1;
            progressive += usize::from(f[3] == "1");
        }
    }
    assert!(
        exact == 2 * (120 + 44) && progressive >= 40,
        "{exact} exact, {progressive} progressive"
    );
}
