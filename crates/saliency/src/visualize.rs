//! Pictures of attributions, drawn as PAIR's `saliency` library draws them: [`grayscale`]
//! (|attribution| summed over channels, clipped at its 99th percentile) and [`diverging`] (the
//! signed sum over channels on a span symmetric around zero), coloured by a [`Colormap`],
//! laid over the input ([`overlay`]) and put side by side in a titled figure ([`grid`]).
//!
//! ```
//! use smoothgrad_autodiff::Tensor;
//! use smoothgrad_saliency::visualize::{Colormap, grayscale, grid};
//!
//! let attribution = Tensor::from_vec((0..48).map(|i| i as f32 - 20.0).collect(), &[3, 4, 4])?;
//! let heat = grayscale(&attribution)?;
//! assert_eq!((heat.width, heat.height), (4, 4));
//! assert!(heat.values.iter().all(|v| (0.0..=1.0).contains(v)));
//! let picture = heat.to_rgb(Colormap::Inferno);
//! let figure = grid(&["input", "map"], &[vec![picture.clone(), picture]], 8)?;
//! assert!(figure.width() > 2 * 32);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod font;

use crate::error::{Result, SaliencyError};
use image::{Rgb, RgbImage};
use smoothgrad_autodiff::Tensor;
use std::str::FromStr;

/// The percentile at which maps are clipped, as PAIR's `VisualizeImageGrayscale` does.
pub const CLIP_PERCENTILE: f64 = 99.0;

/// A single-channel map with values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Heatmap {
    /// The map coloured by `colormap`.
    pub fn to_rgb(&self, colormap: Colormap) -> RgbImage {
        RgbImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            Rgb(colormap.rgb(self.values[y as usize * self.width + x as usize]))
        })
    }
}

/// |attribution| summed over channels, scaled so the minimum is 0 and the 99th percentile is 1,
/// clipped to [0, 1] (PAIR's `VisualizeImageGrayscale`).
pub fn grayscale(attribution: &Tensor<f32>) -> Result<Heatmap> {
    let (height, width, plane) = channel_sum(attribution, f32::abs)?;
    let lo = plane.iter().copied().fold(f32::INFINITY, f32::min);
    let mut hi = percentile(&plane, CLIP_PERCENTILE);
    if hi <= lo {
        // More than 99% of the map is at its minimum: let the rest show at full strength.
        hi = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }
    let span = hi - lo;
    let values = plane
        .iter()
        .map(|&v| {
            if span > 0.0 {
                ((v - lo) / span).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    Ok(Heatmap {
        width,
        height,
        values,
    })
}

/// The signed attribution summed over channels, mapped from [−s, s] to [0, 1] (0.5 = zero) where
/// s is the 99th percentile of its absolute values; meant for [`Colormap::RedBlue`].
pub fn diverging(attribution: &Tensor<f32>) -> Result<Heatmap> {
    let (height, width, plane) = channel_sum(attribution, |v| v)?;
    let magnitudes: Vec<f32> = plane.iter().map(|v| v.abs()).collect();
    let mut span = percentile(&magnitudes, CLIP_PERCENTILE);
    if span <= 0.0 {
        span = magnitudes.iter().copied().fold(0.0, f32::max);
    }
    let values = plane
        .iter()
        .map(|&v| {
            if span > 0.0 {
                (0.5 + 0.5 * v / span).clamp(0.0, 1.0)
            } else {
                0.5
            }
        })
        .collect();
    Ok(Heatmap {
        width,
        height,
        values,
    })
}

/// `(height, width, Σ_c f(a[c, y, x]))` of a finite `[C, H, W]` (or `[1, C, H, W]`, or `[H, W]`)
/// attribution.
fn channel_sum(
    attribution: &Tensor<f32>,
    f: impl Fn(f32) -> f32,
) -> Result<(usize, usize, Vec<f32>)> {
    let dims = attribution.dims();
    let (h, w) = match dims {
        [.., h, w] if dims.len() >= 2 && *h > 0 && *w > 0 => (*h, *w),
        _ => {
            return Err(SaliencyError::Input(format!(
                "an attribution to draw needs a non-empty [C, H, W] shape, got {dims:?}"
            )));
        }
    };
    if let Some(i) = attribution.first_non_finite() {
        return Err(SaliencyError::Input(format!(
            "attribution value {} at element {i} is not finite",
            attribution.as_slice()[i]
        )));
    }
    let mut plane = vec![0.0f32; h * w];
    for channel in attribution.as_slice().chunks_exact(h * w) {
        for (p, &v) in plane.iter_mut().zip(channel) {
            *p += f(v);
        }
    }
    Ok((h, w, plane))
}

/// The `p`-th percentile of `values` with linear interpolation between ranks (NumPy's
/// default); 0 for no values.
pub fn percentile(values: &[f32], p: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (below, frac) = (rank.floor() as usize, rank.fract() as f32);
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + frac * (sorted[above] - sorted[below])
}

/// Colour maps for heatmaps: perceptually uniform ones from matplotlib, plain gray, and a
/// blue–white–red diverging map for signed attributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// Black (0) to white (1), as in the SmoothGrad paper's figures.
    Gray,
    Inferno,
    Viridis,
    Magma,
    Plasma,
    Cividis,
    Turbo,
    /// Blue (0) through white (0.5) to red (1): ColorBrewer's RdBu, reversed.
    RedBlue,
}

impl Colormap {
    /// Every colour map, in the order `--help` lists them.
    pub const ALL: [Colormap; 8] = [
        Colormap::Gray,
        Colormap::Inferno,
        Colormap::Viridis,
        Colormap::Magma,
        Colormap::Plasma,
        Colormap::Cividis,
        Colormap::Turbo,
        Colormap::RedBlue,
    ];

    /// The name the CLI takes.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Gray => "gray",
            Colormap::Inferno => "inferno",
            Colormap::Viridis => "viridis",
            Colormap::Magma => "magma",
            Colormap::Plasma => "plasma",
            Colormap::Cividis => "cividis",
            Colormap::Turbo => "turbo",
            Colormap::RedBlue => "red-blue",
        }
    }

    /// The colour of `t` in [0, 1] (clamped; NaN is 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let gradient = match self {
            Colormap::Gray => {
                let g = (t * 255.0).round() as u8;
                return [g, g, g];
            }
            Colormap::Inferno => colorous::INFERNO,
            Colormap::Viridis => colorous::VIRIDIS,
            Colormap::Magma => colorous::MAGMA,
            Colormap::Plasma => colorous::PLASMA,
            Colormap::Cividis => colorous::CIVIDIS,
            Colormap::Turbo => colorous::TURBO,
            Colormap::RedBlue => {
                let c = colorous::RED_BLUE.eval_continuous(1.0 - f64::from(t));
                return [c.r, c.g, c.b];
            }
        };
        let c = gradient.eval_continuous(f64::from(t));
        [c.r, c.g, c.b]
    }
}

impl FromStr for Colormap {
    type Err = SaliencyError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.to_ascii_lowercase();
        let wanted = match wanted.as_str() {
            "grey" | "grayscale" => "gray",
            "bwr" | "diverging" | "rdbu" => "red-blue",
            other => other,
        };
        Colormap::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| SaliencyError::Option {
                option: "colormap",
                reason: format!(
                    "unknown colour map {s:?}; choose one of {}",
                    Colormap::ALL.map(Colormap::name).join(", ")
                ),
            })
    }
}

/// A model input `[C, H, W]` (C = 1 or 3, or `[1, C, H, W]`) as an RGB picture. Values already
/// in [0, 1] are shown as they are; anything else (a normalised input) is min–max scaled.
pub fn input_to_rgb(image: &Tensor<f32>) -> Result<RgbImage> {
    let dims = image.dims();
    let (c, h, w) = match dims {
        [c, h, w] | [1, c, h, w] if (*c == 1 || *c == 3) && *h > 0 && *w > 0 => (*c, *h, *w),
        _ => {
            return Err(SaliencyError::Input(format!(
                "only [1 or 3, H, W] inputs can be drawn, got {dims:?}"
            )));
        }
    };
    let v = image.as_slice();
    let finite = v.iter().copied().filter(|x| x.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let (offset, scale) = if lo >= 0.0 && hi <= 1.0 {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, 1.0 / (hi - lo))
    } else {
        (lo, 0.0)
    };
    let plane = h * w;
    let byte = |x: f32| (((x - offset) * scale).clamp(0.0, 1.0) * 255.0).round() as u8;
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        if c == 1 {
            let g = byte(v[i]);
            Rgb([g, g, g])
        } else {
            Rgb([byte(v[i]), byte(v[plane + i]), byte(v[2 * plane + i])])
        }
    }))
}

/// The heatmap coloured by `colormap` over a gray copy of `base`:
/// `(1 − alpha) · luma(base) + alpha · colormap(heat)`, as Captum's `blended_heat_map` draws
/// it. The picture is grayed so its own colours cannot be mistaken for the map's.
pub fn overlay(
    base: &RgbImage,
    heat: &Heatmap,
    colormap: Colormap,
    alpha: f32,
) -> Result<RgbImage> {
    if (base.width() as usize, base.height() as usize) != (heat.width, heat.height) {
        return Err(SaliencyError::Input(format!(
            "the heatmap is {}x{} but the picture {}x{}",
            heat.width,
            heat.height,
            base.width(),
            base.height()
        )));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(SaliencyError::Option {
            option: "alpha",
            reason: format!("{alpha} is not in [0, 1]"),
        });
    }
    Ok(RgbImage::from_fn(base.width(), base.height(), |x, y| {
        let color = colormap.rgb(heat.values[y as usize * heat.width + x as usize]);
        let [r, g, b] = base.get_pixel(x, y).0.map(f32::from);
        let luma = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        Rgb(color.map(|c| (luma * (1.0 - alpha) + f32::from(c) * alpha).round() as u8))
    }))
}

/// The most pixels of a picture drawn here (2²⁸: 768 MiB of RGB); a larger one is an error,
/// not an allocation that fails.
pub const MAX_PICTURE_PIXELS: u64 = 1 << 28;

/// `image` enlarged `factor` times with nearest-neighbour sampling (pixels stay crisp squares);
/// an error when the result would exceed [`MAX_PICTURE_PIXELS`].
pub fn upscale_nearest(image: &RgbImage, factor: u32) -> Result<RgbImage> {
    let f = factor.max(1);
    let w = u64::from(image.width()) * u64::from(f);
    let h = u64::from(image.height()) * u64::from(f);
    let too_large = || {
        SaliencyError::Input(format!(
            "a {w}x{h} picture ({}x{} enlarged {f} times) is too large to draw (over {MAX_PICTURE_PIXELS} pixels)",
            image.width(),
            image.height()
        ))
    };
    if w.saturating_mul(h) > MAX_PICTURE_PIXELS {
        return Err(too_large());
    }
    let (w, h) = (
        u32::try_from(w).map_err(|_| too_large())?,
        u32::try_from(h).map_err(|_| too_large())?,
    );
    Ok(RgbImage::from_fn(w, h, |x, y| {
        *image.get_pixel(x / f, y / f)
    }))
}

/// Space between tiles and around the figure, in pixels.
const GAP: u32 = 6;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([30, 30, 30]);

/// A figure: a title row (`titles[k]` over column k, wrapped at spaces, in a small bitmap font)
/// above `rows` of pictures, every picture enlarged `scale` times (nearest neighbour) and
/// centred in its cell. Rows may be shorter than `titles`; missing cells stay blank.
pub fn grid<S: AsRef<str>>(titles: &[S], rows: &[Vec<RgbImage>], scale: u32) -> Result<RgbImage> {
    let columns = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(titles.len());
    if columns == 0 || rows.is_empty() {
        return Err(SaliencyError::Input(
            "a grid needs at least one picture".into(),
        ));
    }
    let scale = scale.max(1);
    let all = rows.iter().flatten();
    let cell_w = u64::from(all.clone().map(|p| p.width()).max().unwrap_or(1)) * u64::from(scale);
    let cell_h = u64::from(all.map(|p| p.height()).max().unwrap_or(1)) * u64::from(scale);
    let limit = MAX_PICTURE_PIXELS;
    // One cell over the limit is refused before any size is narrowed to u32.
    let (Ok(cell_w), Ok(cell_h)) = (u32::try_from(cell_w), u32::try_from(cell_h)) else {
        return Err(SaliencyError::Input(format!(
            "a {cell_w}x{cell_h} cell is too large to draw"
        )));
    };
    if u64::from(cell_w) * u64::from(cell_h) > limit {
        return Err(SaliencyError::Input(format!(
            "a {cell_w}x{cell_h} cell is too large to draw"
        )));
    }
    let (text_scale, lines) = title_layout(titles, cell_w);
    let line_h = (font::GLYPH_H + 3) * text_scale;
    let title_h = if lines.iter().all(Vec::is_empty) {
        0
    } else {
        lines.iter().map(Vec::len).max().unwrap_or(0) as u32 * line_h + GAP
    };
    let width = u64::from(GAP) + columns as u64 * u64::from(cell_w + GAP);
    let height = u64::from(GAP + title_h) + rows.len() as u64 * u64::from(cell_h + GAP);
    if width * height > limit {
        return Err(SaliencyError::Input(format!(
            "a {width}x{height} figure is too large to draw"
        )));
    }
    let mut figure = RgbImage::from_pixel(width as u32, height as u32, BACKGROUND);
    let cell_x = |k: usize| GAP + k as u32 * (cell_w + GAP);
    for (k, title_lines) in lines.iter().enumerate() {
        for (j, line) in title_lines.iter().enumerate() {
            let text_w = line.chars().count() as u32 * font::ADVANCE * text_scale;
            let x = cell_x(k) + cell_w.saturating_sub(text_w) / 2;
            draw_text(&mut figure, line, x, GAP + j as u32 * line_h, text_scale);
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let y0 = GAP + title_h + r as u32 * (cell_h + GAP);
        for (k, picture) in row.iter().enumerate() {
            let big = upscale_nearest(picture, scale)?;
            let x = cell_x(k) + (cell_w - big.width()) / 2;
            let y = y0 + (cell_h - big.height()) / 2;
            image::imageops::replace(&mut figure, &big, i64::from(x), i64::from(y));
        }
    }
    Ok(figure)
}

/// The text scale (2 when every word fits the cell at double size, else 1) and each title's
/// lines, words wrapped greedily to the cell width.
fn title_layout<S: AsRef<str>>(titles: &[S], cell_w: u32) -> (u32, Vec<Vec<String>>) {
    let longest_word = titles
        .iter()
        .flat_map(|t| t.as_ref().split_whitespace())
        .map(|w| w.chars().count() as u32)
        .max()
        .unwrap_or(0);
    let text_scale = if longest_word * font::ADVANCE * 2 <= cell_w {
        2
    } else {
        1
    };
    let max_chars = (cell_w / (font::ADVANCE * text_scale)).max(1) as usize;
    let lines = titles
        .iter()
        .map(|t| {
            let mut lines: Vec<String> = Vec::new();
            for word in t.as_ref().split_whitespace() {
                match lines.last_mut() {
                    Some(line) if line.chars().count() + 1 + word.chars().count() <= max_chars => {
                        line.push(' ');
                        line.push_str(word);
                    }
                    _ => lines.push(word.to_string()),
                }
            }
            lines
        })
        .collect();
    (text_scale, lines)
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide;
/// whatever falls outside the picture is cut.
fn draw_text(picture: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32) {
    for (i, c) in text.chars().enumerate() {
        let x0 = x + i as u32 * font::ADVANCE * scale;
        for (row, bits) in font::glyph(c).iter().enumerate() {
            for col in 0..font::GLYPH_W {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x0 + col * scale + dx, y + row as u32 * scale + dy);
                        if px < picture.width() && py < picture.height() {
                            picture.put_pixel(px, py, INK);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: Vec<f32>, dims: &[usize]) -> Tensor<f32> {
        Tensor::from_vec(values, dims).unwrap()
    }

    #[test]
    fn percentile_matches_numpy() {
        // np.percentile([1, 2, 3, 4], 99) = 3.97; np.percentile(range(101), 99) = 99.
        assert!((percentile(&[4.0, 1.0, 3.0, 2.0], 99.0) - 3.97).abs() < 1e-6);
        let hundred: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(percentile(&hundred, 99.0), 99.0);
        assert_eq!(percentile(&hundred, 0.0), 0.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn grayscale_sums_magnitudes_and_clips_the_top_percent() {
        // Two channels of ±(0..=100): |a| summed is 2·(0..=100); the top value clips to 1.
        let plane: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        let negated: Vec<f32> = plane.iter().map(|v| -v).collect();
        let a = tensor([plane.clone(), negated].concat(), &[2, 1, 101]);
        let g = grayscale(&a).unwrap();
        assert_eq!((g.width, g.height), (101, 1));
        assert_eq!(g.values[0], 0.0);
        assert!((g.values[50] - 50.0 / 99.0).abs() < 1e-6);
        assert_eq!(g.values[99], 1.0);
        assert_eq!(g.values[100], 1.0);
        // A constant map is all zeros, a map that is zero but for one pixel shows that pixel.
        assert!(
            grayscale(&tensor(vec![3.0; 8], &[2, 2, 2]))
                .unwrap()
                .values
                .iter()
                .all(|&v| v == 0.0)
        );
        let mut spike = vec![0.0; 400];
        spike[7] = -2.0;
        let g = grayscale(&tensor(spike, &[1, 20, 20])).unwrap();
        assert_eq!(g.values[7], 1.0);
        assert_eq!(g.values.iter().filter(|&&v| v > 0.0).count(), 1);
    }

    #[test]
    fn diverging_is_symmetric_around_one_half() {
        let a = tensor(vec![-2.0, -1.0, 0.0, 1.0, 2.0], &[1, 1, 5]);
        let d = diverging(&a).unwrap();
        assert_eq!(d.values[2], 0.5);
        assert!((d.values[1] + d.values[3] - 1.0).abs() < 1e-6);
        assert!(d.values[0] < d.values[1] && d.values[3] < d.values[4]);
        assert!(d.values.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(
            Colormap::RedBlue.rgb(0.5).iter().all(|&c| c > 230),
            "zero is near white"
        );
        let [r, _, b] = Colormap::RedBlue.rgb(1.0);
        assert!(r > b, "positive attributions are red");
    }

    #[test]
    fn pictures_too_large_to_draw_are_errors() {
        let tile = RgbImage::from_pixel(2, 3, Rgb([9, 8, 7]));
        let big = upscale_nearest(&tile, 4).unwrap();
        assert_eq!((big.width(), big.height()), (8, 12));
        assert_eq!(big.get_pixel(7, 11), &Rgb([9, 8, 7]));
        // 2·2¹⁶ × 3·2¹⁶ pixels: refused before allocating.
        let e = upscale_nearest(&tile, 1 << 16).unwrap_err().to_string();
        assert!(
            e.contains("a 131072x196608 picture (2x3 enlarged 65536 times)"),
            "{e}"
        );
        // A factor that overflows u32 sides.
        let wide = RgbImage::new(1 << 20, 0);
        assert!(upscale_nearest(&wide, u32::MAX).is_err());
        let e = grid(&["a"], &[vec![tile]], u32::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large to draw"), "{e}");
    }

    #[test]
    fn bad_attributions_are_errors() {
        assert!(grayscale(&tensor(vec![1.0, f32::NAN], &[1, 1, 2])).is_err());
        assert!(grayscale(&tensor(vec![1.0, 2.0], &[2])).is_err());
        assert!(diverging(&tensor(vec![], &[1, 0, 3])).is_err());
    }

    #[test]
    fn colormaps_parse_by_name() {
        for c in Colormap::ALL {
            assert_eq!(c.name().parse::<Colormap>().unwrap(), c);
        }
        assert_eq!("Inferno".parse::<Colormap>().unwrap(), Colormap::Inferno);
        let err = "jet".parse::<Colormap>().unwrap_err().to_string();
        assert!(err.contains("inferno") && err.contains("jet"), "{err}");
        assert_eq!(Colormap::Gray.rgb(1.0), [255; 3]);
        assert_eq!(Colormap::Gray.rgb(f32::NAN), [0; 3]);
        // Inferno runs from near black to pale yellow.
        assert!(Colormap::Inferno.rgb(0.0).iter().all(|&c| c < 10));
        assert!(Colormap::Inferno.rgb(1.0)[0] > 240);
    }

    #[test]
    fn inputs_draw_as_they_are_or_rescaled() {
        let gray = input_to_rgb(&tensor(vec![0.0, 1.0], &[1, 1, 2])).unwrap();
        assert_eq!(
            (gray.get_pixel(0, 0).0, gray.get_pixel(1, 0).0),
            ([0; 3], [255; 3])
        );
        let rgb = input_to_rgb(&tensor(vec![1.0, 0.0, 0.5], &[1, 3, 1, 1])).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 128]);
        let normalised = input_to_rgb(&tensor(vec![-2.0, 2.0], &[1, 1, 2])).unwrap();
        assert_eq!(normalised.get_pixel(0, 0).0, [0; 3]);
        assert!(input_to_rgb(&tensor(vec![0.0; 8], &[2, 2, 2])).is_err());
    }

    #[test]
    fn overlay_blends_the_map_over_a_gray_picture() {
        let base = RgbImage::from_pixel(2, 1, Rgb([0, 200, 0]));
        let heat = Heatmap {
            width: 2,
            height: 1,
            values: vec![0.0, 1.0],
        };
        let gray = (0.7152f32 * 200.0).round() as u8;
        let o = overlay(&base, &heat, Colormap::Gray, 0.0).unwrap();
        assert_eq!(
            o.get_pixel(0, 0).0,
            [gray; 3],
            "alpha 0: the picture, grayed"
        );
        let o = overlay(&base, &heat, Colormap::Gray, 1.0).unwrap();
        assert_eq!(o.get_pixel(1, 0).0, [255; 3], "alpha 1: the colour");
        let o = overlay(&base, &heat, Colormap::Gray, 0.5).unwrap();
        let half = (f32::from(gray) * 0.5 + 127.5).round() as u8;
        assert_eq!(o.get_pixel(1, 0).0, [half; 3]);
        assert!(overlay(&base, &heat, Colormap::Gray, 1.5).is_err());
        let small = Heatmap {
            width: 1,
            height: 1,
            values: vec![0.0],
        };
        assert!(overlay(&base, &small, Colormap::Gray, 0.5).is_err());
    }

    #[test]
    fn grid_lays_out_titles_and_tiles() {
        let black = RgbImage::from_pixel(4, 4, Rgb([0, 0, 0]));
        let rows = vec![vec![black.clone(), black.clone()], vec![black.clone()]];
        let g = grid(&["input", "smoothgrad squared"], &rows, 8).unwrap();
        // Two 32-pixel columns, two rows, and a title row of two lines.
        assert_eq!(g.width(), GAP + 2 * (32 + GAP));
        assert!(g.height() > GAP + 2 * (32 + GAP));
        let title_h = g.height() - GAP - 2 * (32 + GAP);
        // The tiles sit under the titles; the missing cell stays blank.
        assert_eq!(g.get_pixel(GAP, GAP + title_h).0, [0; 3]);
        let missing = (GAP + 32 + GAP + 1, GAP + title_h + 32 + GAP + 1);
        assert_eq!(g.get_pixel(missing.0, missing.1).0, [255; 3]);
        // Some ink was drawn in the title row.
        let ink = (0..g.width())
            .flat_map(|x| (0..title_h).map(move |y| (x, y)))
            .filter(|&(x, y)| g.get_pixel(x, y).0 == INK.0)
            .count();
        assert!(ink > 20);
        assert!(grid::<&str>(&[], &[], 1).is_err());
    }

    #[test]
    fn titles_wrap_at_spaces() {
        let (scale, lines) = title_layout(&["integrated gradients", "vargrad"], 128);
        assert_eq!(scale, 2);
        assert_eq!(lines[0], vec!["integrated", "gradients"]);
        assert_eq!(lines[1], vec!["vargrad"]);
    }
}
