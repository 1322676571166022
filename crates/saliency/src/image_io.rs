//! Pictures in and out: PNG and JPEG files to model inputs `[C, H, W]` with values in [0, 1]
//! (optionally resized, then normalised per channel), and RGB pictures written as PNG.
//!
//! ```
//! use smoothgrad_saliency::image_io::{ImageOptions, decode_image, normalize};
//!
//! // A 2x2 grey PNG made in memory, read for a 3-channel model at 4x4.
//! let mut png = Vec::new();
//! image::GrayImage::from_pixel(2, 2, image::Luma([128]))
//!     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
//! let options = ImageOptions { channels: 3, resize: Some([4, 4]) };
//! let x = decode_image(&png, "grey.png".as_ref(), &options)?;
//! assert_eq!(x.dims(), &[3, 4, 4]);
//! let x = normalize(&x, &[0.5, 0.5, 0.5], &[0.25, 0.25, 0.25])?;
//! assert!(x.as_slice().iter().all(|v| v.abs() < 0.01));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The picture's dimensions are read from its header and checked against [`ImageLimits`] before
//! any pixel is decoded, so a small file that claims a huge picture costs nothing.
#![deny(clippy::indexing_slicing)]

use crate::error::{Result, SaliencyError};
use crate::npy::write_atomically;
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageReader, Limits, Pixel, RgbImage};
use smoothgrad_autodiff::Tensor;
use std::io::Cursor;
use std::path::Path;

/// File extensions read as images (lowercase).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The largest side a resize may ask for.
pub const MAX_SIDE: usize = 1 << 14;

/// The largest picture decoded: checked from the header, before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Widest picture, in pixels.
    pub max_width: u32,
    /// Tallest picture, in pixels.
    pub max_height: u32,
    /// Most pixels (width × height).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 16384 pixels a side and 2^26 pixels (64 Mpx: 768 MiB once converted to f32 RGB).
    fn default() -> Self {
        ImageLimits {
            max_width: 1 << 14,
            max_height: 1 << 14,
            max_pixels: 1 << 26,
        }
    }
}

/// How a picture becomes a model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// Channels the model takes: 1 (luma) or 3 (RGB). Alpha is dropped.
    pub channels: usize,
    /// `[height, width]` to resize to with a bilinear (triangle) filter; `None` keeps the size.
    pub resize: Option<[usize; 2]>,
}

/// Reads a PNG or JPEG file as `[C, H, W]` with values in [0, 1] (see [`ImageOptions`]), within
/// the default [`ImageLimits`].
pub fn load_image(path: &Path, options: &ImageOptions) -> Result<Tensor<f32>> {
    load_image_with_limits(path, options, &ImageLimits::default())
}

/// [`load_image`] within `limits`.
pub fn load_image_with_limits(
    path: &Path,
    options: &ImageOptions,
    limits: &ImageLimits,
) -> Result<Tensor<f32>> {
    let bytes = std::fs::read(path).map_err(|source| SaliencyError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    decode_image_with_limits(&bytes, path, options, limits)
}

/// Decodes the bytes of a PNG or JPEG picture within the default [`ImageLimits`]; `path` names
/// it in messages.
pub fn decode_image(bytes: &[u8], path: &Path, options: &ImageOptions) -> Result<Tensor<f32>> {
    decode_image_with_limits(bytes, path, options, &ImageLimits::default())
}

/// [`decode_image`] within `limits`: the dimensions in the header are checked before decoding.
pub fn decode_image_with_limits(
    bytes: &[u8],
    path: &Path,
    options: &ImageOptions,
    limits: &ImageLimits,
) -> Result<Tensor<f32>> {
    let fail = |reason: String| SaliencyError::Image {
        path: path.to_path_buf(),
        reason,
    };
    if options.channels != 1 && options.channels != 3 {
        return Err(SaliencyError::Input(format!(
            "the model takes {} channels; pictures can only feed 1 (grayscale) or 3 (RGB)",
            options.channels
        )));
    }
    if let Some([h, w]) = options.resize
        && !((1..=MAX_SIDE).contains(&h) && (1..=MAX_SIDE).contains(&w))
    {
        return Err(SaliencyError::Option {
            option: "resize",
            reason: format!("{h},{w}: each side must be between 1 and {MAX_SIDE}"),
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read the image: {e}")))?;
    // The decoder enforces the side limits too, and bounds what it allocates besides the pixels.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 26));
    reader.limits(decoder_limits);
    let over = |size: String| {
        format!(
            "the picture is {size}, over the limit of {}x{} and {} pixels",
            limits.max_width, limits.max_height, limits.max_pixels
        )
    };
    let decoder = reader.into_decoder().map_err(|e| match e {
        // The header's size is over the side limits given to the decoder.
        image::ImageError::Limits(_) => fail(over(format!("too large ({e})"))),
        e => fail(format!("cannot read the image: {e}")),
    })?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(fail(over(format!("{width}x{height} pixels"))));
    }
    let image = DynamicImage::from_decoder(decoder)
        .map_err(|e| fail(format!("cannot decode the image: {e}")))?;
    if options.channels == 1 {
        to_tensor(resized(image.to_luma32f(), options.resize))
    } else {
        to_tensor(resized(image.to_rgb32f(), options.resize))
    }
}

/// `image` resized to `[height, width]` with the triangle (bilinear) filter, when asked.
fn resized<P>(image: ImageBuffer<P, Vec<f32>>, size: Option<[usize; 2]>) -> ImageBuffer<P, Vec<f32>>
where
    P: Pixel<Subpixel = f32> + 'static,
{
    match size {
        Some([h, w]) if (h as u32, w as u32) != (image.height(), image.width()) => {
            // Sides were checked against MAX_SIDE, so they fit in u32.
            image::imageops::resize(&image, w as u32, h as u32, FilterType::Triangle)
        }
        _ => image,
    }
}

/// Interleaved HWC pixels to a planar `[C, H, W]` tensor, clamped to [0, 1].
fn to_tensor<P>(image: ImageBuffer<P, Vec<f32>>) -> Result<Tensor<f32>>
where
    P: Pixel<Subpixel = f32>,
{
    let (w, h) = (image.width() as usize, image.height() as usize);
    let c = usize::from(P::CHANNEL_COUNT);
    let hwc = image.into_raw();
    // Plane k takes every c-th value from k on (c is 1 or 3, never 0).
    let chw: Vec<f32> = (0..c)
        .flat_map(|k| {
            hwc.iter()
                .skip(k)
                .step_by(c.max(1))
                .map(|v| v.clamp(0.0, 1.0))
        })
        .collect();
    Ok(Tensor::from_vec(chw, &[c, h, w])?)
}

/// `(x - mean[c]) / std[c]` per channel of `[C, H, W]`; `mean` and `std` hold one value per
/// channel, or one value for all.
pub fn normalize(image: &Tensor<f32>, mean: &[f32], std: &[f32]) -> Result<Tensor<f32>> {
    let dims = image.dims();
    let [c, h, w] = dims else {
        return Err(SaliencyError::Input(format!(
            "normalising needs [C, H, W], got {dims:?}"
        )));
    };
    let per_channel = |values: &[f32], option: &'static str| -> Result<Vec<f32>> {
        if values.iter().any(|v| !v.is_finite()) {
            return Err(SaliencyError::Option {
                option,
                reason: format!("{values:?} holds a value that is not finite"),
            });
        }
        match *values {
            [value] => Ok(vec![value; *c]),
            _ if values.len() == *c => Ok(values.to_vec()),
            _ => Err(SaliencyError::Option {
                option,
                reason: format!("{} values given for an image of {c} channels", values.len()),
            }),
        }
    };
    let mean = per_channel(mean, "mean")?;
    let std = per_channel(std, "std")?;
    if let Some(s) = std.iter().find(|&&s| s <= 0.0) {
        return Err(SaliencyError::Option {
            option: "std",
            reason: format!("{s} is not positive"),
        });
    }
    let plane = h * w;
    let mut out = image.as_slice().to_vec();
    for ((values, m), s) in out.chunks_mut(plane.max(1)).zip(&mean).zip(&std) {
        for v in values {
            *v = (*v - m) / s;
        }
    }
    Ok(Tensor::from_vec(out, dims)?)
}

/// Writes an RGB picture as PNG, atomically (temporary file in the same directory, renamed).
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image.clone())
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| SaliencyError::Image {
            path: path.to_path_buf(),
            reason: format!("cannot encode PNG: {e}"),
        })?;
    write_atomically(path, |w| std::io::Write::write_all(w, &bytes))
}

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma, Rgb};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    fn opts(channels: usize, resize: Option<[usize; 2]>) -> ImageOptions {
        ImageOptions { channels, resize }
    }

    #[test]
    fn rgb_png_becomes_planar_chw_in_unit_range() {
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(2, 1, Rgb([0, 51, 255]));
        let png = encode(DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let t = decode_image(&png, Path::new("x.png"), &opts(3, None)).unwrap();
        assert_eq!(t.dims(), &[3, 2, 3]);
        let at = |c: usize, y: usize, x: usize| t.as_slice()[c * 6 + y * 3 + x];
        assert_eq!((at(0, 0, 0), at(1, 0, 0), at(2, 0, 0)), (1.0, 0.0, 0.0));
        assert!((at(1, 1, 2) - 0.2).abs() < 1e-6 && at(2, 1, 2) == 1.0);
    }

    #[test]
    fn grayscale_is_expanded_and_rgb_reduced_to_luma() {
        let gray = GrayImage::from_pixel(4, 4, Luma([102]));
        let png = encode(DynamicImage::ImageLuma8(gray), ImageFormat::Png);
        let t = decode_image(&png, Path::new("g.png"), &opts(3, None)).unwrap();
        assert_eq!(t.dims(), &[3, 4, 4]);
        assert!(t.as_slice().iter().all(|&v| (v - 0.4).abs() < 1e-6));

        let rgb = RgbImage::from_pixel(2, 2, Rgb([0, 255, 0]));
        let png = encode(DynamicImage::ImageRgb8(rgb), ImageFormat::Png);
        let t = decode_image(&png, Path::new("c.png"), &opts(1, None)).unwrap();
        assert_eq!(t.dims(), &[1, 2, 2]);
        // Rec. 709 luma of pure green.
        assert!(t.as_slice().iter().all(|&v| (v - 0.7152).abs() < 1e-3));
    }

    #[test]
    fn jpeg_and_resize() {
        let rgb = RgbImage::from_fn(16, 8, |x, _| Rgb([(x * 16) as u8, 128, 64]));
        let jpg = encode(DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg);
        let t = decode_image(&jpg, Path::new("p.jpg"), &opts(3, Some([4, 6]))).unwrap();
        assert_eq!(t.dims(), &[3, 4, 6]);
        assert!(t.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
        let err = decode_image(&jpg, Path::new("p.jpg"), &opts(3, Some([0, 6]))).unwrap_err();
        assert!(err.to_string().starts_with("resize:"), "{err}");
    }

    #[test]
    fn errors_name_the_file() {
        let err = decode_image(b"not a picture", Path::new("bad.png"), &opts(3, None)).unwrap_err();
        assert!(err.to_string().starts_with("bad.png: "), "{err}");
        let err = load_image(Path::new("/no/such/file.png"), &opts(3, None)).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.png"), "{err}");
        let err = decode_image(b"", Path::new("x.png"), &opts(4, None)).unwrap_err();
        assert!(err.to_string().contains("4 channels"), "{err}");
    }

    #[test]
    fn normalize_checks_its_arguments() {
        let x = Tensor::from_vec(vec![0.0f32, 1.0, 0.5, 0.5], &[2, 1, 2]).unwrap();
        let y = normalize(&x, &[0.5, 0.0], &[0.5, 2.0]).unwrap();
        assert_eq!(y.as_slice(), &[-1.0, 1.0, 0.25, 0.25]);
        assert!(normalize(&x, &[0.5, 0.5, 0.5], &[1.0]).is_err());
        assert!(normalize(&x, &[0.5], &[0.0]).is_err());
        assert!(normalize(&x, &[f32::NAN], &[1.0]).is_err());
    }

    #[test]
    fn png_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        save_png(&path, &RgbImage::from_pixel(3, 3, Rgb([1, 2, 3]))).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.get_pixel(2, 2), &Rgb([1, 2, 3]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
