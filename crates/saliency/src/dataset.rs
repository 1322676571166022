//! A benchmark with known answers: RGB images in which the class is decided by one foreground
//! shape (disc, square, triangle, cross, ring) with a random colour, position, size and rotation,
//! pasted on a distracting procedural background (smooth colour noise, stripes or a gradient,
//! plus small blobs that are not class shapes). Each image comes with the exact mask of the
//! object, so an explanation can be scored against where the evidence really is.
//!
//! Generated on the fly and reproducible: sample `index` under `seed` is a pure function of the
//! two (counter-based Philox draws), with values on the 1/255 grid so a PNG round trip is exact.
//!
//! ```
//! use smoothgrad_saliency::dataset::{CLASSES, ShapesConfig, generate};
//!
//! let sample = generate(7, 0);
//! assert_eq!(sample.image.dims(), &[3, 32, 32]);
//! assert_eq!(sample.mask.len(), 32 * 32);
//! assert!(sample.label < CLASSES.len());
//! assert_eq!(sample.image, generate(7, 0).image);
//! let large = ShapesConfig { size: 64, ..ShapesConfig::default() }.generate(7, 0);
//! assert_eq!(large.image.dims(), &[3, 64, 64]);
//! ```

mod training;

pub use training::{TrainConfig, TrainProgress, TrainReport, train_shapes_cnn};

use crate::error::{Result, SaliencyError};
use crate::image_io::save_png;
use image::{GrayImage, Luma, Rgb, RgbImage};
use rayon::prelude::*;
use smoothgrad_autodiff::Tensor;
use smoothgrad_autodiff::rng::{box_muller, philox4x32_10};
use std::f32::consts::{PI, TAU};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The class names, in label order.
pub const CLASSES: [&str; 5] = ["disc", "square", "triangle", "cross", "ring"];

/// The seed of the training stream.
pub const TRAIN_SEED: u64 = 1;
/// The seed of the test stream (disjoint from training: another Philox key).
pub const TEST_SEED: u64 = 2;

/// How the benchmark's images are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapesConfig {
    /// Side of the square images in pixels (default 32: the bundled model trains in under two
    /// minutes on two cores; every size works).
    pub size: usize,
    /// Range of the object's radius as a fraction of the side (default 0.14–0.24).
    pub radius: (f32, f32),
    /// At most this many distractor blobs (default 6).
    pub max_distractors: usize,
    /// Standard deviation of the per-pixel Gaussian noise (default 0.03).
    pub pixel_noise: f32,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig {
            size: 32,
            radius: (0.14, 0.24),
            max_distractors: 6,
            pixel_noise: 0.03,
        }
    }
}

/// One benchmark image and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image `[3, H, W]`, values in [0, 1] on the 1/255 grid.
    pub image: Tensor<f32>,
    /// Whether each pixel (row-major, H·W) belongs to the object.
    pub mask: Vec<bool>,
    /// The class, an index into [`CLASSES`].
    pub label: usize,
}

/// Many samples stacked.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images `[N, 3, H, W]`.
    pub images: Tensor<f32>,
    /// Labels, one per image.
    pub labels: Vec<usize>,
    /// Masks, one per image.
    pub masks: Vec<Vec<bool>>,
}

/// Sample `index` of the stream `seed` with the default configuration (32×32).
pub fn generate(seed: u64, index: u64) -> Sample {
    ShapesConfig::default().generate(seed, index)
}

/// A stream of uniform draws for one sample: Philox4x32-10 keyed by `seed`, counter
/// (block, index), so samples are independent and any one can be drawn alone.
struct Draws {
    key: [u32; 2],
    index: u64,
    block: u64,
    words: [u32; 4],
    used: usize,
}

impl Draws {
    fn new(seed: u64, index: u64) -> Self {
        Draws {
            key: [seed as u32, (seed >> 32) as u32],
            index,
            block: 0,
            words: [0; 4],
            used: 4,
        }
    }

    fn word(&mut self) -> u32 {
        if self.used == 4 {
            let c = [
                self.block as u32,
                (self.block >> 32) as u32,
                self.index as u32,
                (self.index >> 32) as u32,
            ];
            self.words = philox4x32_10(c, self.key);
            self.block += 1;
            self.used = 0;
        }
        self.used += 1;
        self.words[self.used - 1]
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.word() >> 8) as f32 / 16_777_216.0
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((self.word() as u64 * n as u64) >> 32) as usize
    }

    fn colour(&mut self) -> [f32; 3] {
        [self.unit(), self.unit(), self.unit()]
    }

    fn normal(&mut self) -> f32 {
        let (a, b) = (self.word(), self.word());
        box_muller(a, b).0
    }
}

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    std::array::from_fn(|k| a[k] + (b[k] - a[k]) * t)
}

fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Whether the point `(u, v)`, in the object's frame scaled by its radius, is inside `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    let rho2 = u * u + v * v;
    match class {
        0 => rho2 <= 1.0,
        1 => u.abs().max(v.abs()) <= 0.82,
        2 => {
            // Equilateral triangle with circumradius 1.15: inside the three edges at inradius.
            (0..3).all(|i| {
                let a = PI / 2.0 + TAU * i as f32 / 3.0;
                u * a.cos() + v * a.sin() <= 0.575
            })
        }
        3 => (u.abs() <= 0.32 && v.abs() <= 1.0) || (v.abs() <= 0.32 && u.abs() <= 1.0),
        _ => (0.3025..=1.0).contains(&rho2),
    }
}

impl ShapesConfig {
    /// Sample `index` of the stream `seed`: a pure function of both.
    pub fn generate(&self, seed: u64, index: u64) -> Sample {
        let s = self.size;
        let sf = s as f32;
        let mut draws = Draws::new(seed, index);
        let label = (index % CLASSES.len() as u64) as usize;
        let mut pixels = self.background(&mut draws);

        // Distractors: small ellipses of random colours, under the object.
        let blobs = draws.below(self.max_distractors + 1);
        for _ in 0..blobs {
            let (cx, cy) = (draws.range(0.0, sf), draws.range(0.0, sf));
            let a = draws.range(0.02, 0.06) * sf;
            let b = draws.range(0.02, 0.06) * sf;
            let theta = draws.range(0.0, PI);
            let colour = draws.colour();
            let (c, sn) = (theta.cos(), theta.sin());
            self.paint(&mut pixels, colour, |x, y| {
                let (dx, dy) = (x - cx, y - cy);
                let (u, v) = ((dx * c + dy * sn) / a, (-dx * sn + dy * c) / b);
                u * u + v * v <= 1.0
            });
        }

        // The object: radius, rotation, a centre that keeps it inside the image.
        let r = draws.range(self.radius.0, self.radius.1) * sf;
        let theta = draws.range(0.0, TAU);
        let margin = 1.2 * r + 1.0;
        let cx = draws.range(margin, (sf - margin).max(margin));
        let cy = draws.range(margin, (sf - margin).max(margin));
        let (c, sn) = (theta.cos(), theta.sin());
        let in_object = |x: f32, y: f32| {
            let (dx, dy) = (x - cx, y - cy);
            inside(label, (dx * c + dy * sn) / r, (-dx * sn + dy * c) / r)
        };
        let mask: Vec<bool> = (0..s * s)
            .map(|i| in_object((i % s) as f32 + 0.5, (i / s) as f32 + 0.5))
            .collect();
        let colour = self.object_colour(&mut draws, &pixels, (cx, cy), r);
        for (p, &m) in pixels.iter_mut().zip(&mask) {
            if m {
                *p = colour;
            }
        }

        let mut image = vec![0.0f32; 3 * s * s];
        for (i, p) in pixels.iter().enumerate() {
            for k in 0..3 {
                let v = p[k] + self.pixel_noise * draws.normal();
                image[k * s * s + i] = (v.clamp(0.0, 1.0) * 255.0).round() / 255.0;
            }
        }
        // justified: `image` was allocated above with exactly 3·s·s values.
        #[allow(clippy::expect_used)]
        let image = Tensor::from_vec(image, &[3, s, s]).expect("3·size² values");
        Sample { image, mask, label }
    }

    /// Samples `indices` of the stream `seed`, generated in parallel and stacked.
    pub fn batch(&self, seed: u64, indices: Range<u64>) -> Batch {
        let samples: Vec<Sample> = indices
            .into_par_iter()
            .map(|i| self.generate(seed, i))
            .collect();
        let s = self.size;
        let mut images = Vec::with_capacity(samples.len() * 3 * s * s);
        let (mut labels, mut masks) = (Vec::new(), Vec::new());
        for sample in samples {
            images.extend_from_slice(sample.image.as_slice());
            labels.push(sample.label);
            masks.push(sample.mask);
        }
        let n = labels.len();
        // justified: every sample holds 3·s·s values, so n samples fill [n, 3, s, s].
        #[allow(clippy::expect_used)]
        let images = Tensor::from_vec(images, &[n, 3, s, s]).expect("stacked samples");
        Batch {
            images,
            labels,
            masks,
        }
    }

    /// A background: smooth colour noise, stripes or a linear gradient, as HWC colours.
    fn background(&self, draws: &mut Draws) -> Vec<[f32; 3]> {
        let s = self.size;
        let sf = s as f32;
        let (c0, c1) = (draws.colour(), draws.colour());
        match draws.below(3) {
            0 => {
                // Value noise: random colours on a coarse lattice, smoothly interpolated.
                let cells = 3 + draws.below(4);
                let g = cells + 2;
                let lattice: Vec<[f32; 3]> = (0..g * g).map(|_| draws.colour()).collect();
                let step = sf / cells as f32;
                (0..s * s)
                    .map(|i| {
                        let x = ((i % s) as f32 + 0.5) / step;
                        let y = ((i / s) as f32 + 0.5) / step;
                        let (ix, iy) = (x as usize, y as usize);
                        let (tx, ty) = (smoothstep(x.fract()), smoothstep(y.fract()));
                        let at = |a: usize, b: usize| lattice[(iy + b) * g + ix + a];
                        lerp(
                            lerp(at(0, 0), at(1, 0), tx),
                            lerp(at(0, 1), at(1, 1), tx),
                            ty,
                        )
                    })
                    .collect()
            }
            1 => {
                let theta = draws.range(0.0, PI);
                let period = draws.range(0.1, 0.35) * sf;
                let phase = draws.range(0.0, TAU);
                let sharp = draws.range(1.0, 4.0);
                let (c, sn) = (theta.cos(), theta.sin());
                (0..s * s)
                    .map(|i| {
                        let (x, y) = ((i % s) as f32, (i / s) as f32);
                        let w = (TAU * (x * c + y * sn) / period + phase).sin();
                        lerp(c0, c1, 0.5 + 0.5 * (sharp * w).clamp(-1.0, 1.0))
                    })
                    .collect()
            }
            _ => {
                let theta = draws.range(0.0, TAU);
                let (c, sn) = (theta.cos(), theta.sin());
                let half = 0.5 * sf * (c.abs() + sn.abs());
                (0..s * s)
                    .map(|i| {
                        let (x, y) = ((i % s) as f32 - 0.5 * sf, (i / s) as f32 - 0.5 * sf);
                        lerp(c0, c1, 0.5 + 0.5 * (x * c + y * sn) / half.max(1.0))
                    })
                    .collect()
            }
        }
    }

    /// Sets every pixel whose centre satisfies `inside` to `colour`.
    fn paint(&self, pixels: &mut [[f32; 3]], colour: [f32; 3], inside: impl Fn(f32, f32) -> bool) {
        let s = self.size;
        for (i, p) in pixels.iter_mut().enumerate() {
            if inside((i % s) as f32 + 0.5, (i / s) as f32 + 0.5) {
                *p = colour;
            }
        }
    }

    /// An object colour that stands out from the background around the object: of eight
    /// random candidates, the one whose 10th-percentile distance to the pixels within 1.3 radii
    /// of the centre is largest (so it is not camouflaged by any large part of them).
    fn object_colour(
        &self,
        draws: &mut Draws,
        pixels: &[[f32; 3]],
        (cx, cy): (f32, f32),
        r: f32,
    ) -> [f32; 3] {
        let s = self.size;
        let near: Vec<[f32; 3]> = pixels
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let (dx, dy) = ((i % s) as f32 + 0.5 - cx, (i / s) as f32 + 0.5 - cy);
                dx * dx + dy * dy <= (1.3 * r) * (1.3 * r)
            })
            .map(|(_, p)| *p)
            .collect();
        let mut best = ([0.0; 3], f32::MIN);
        for _ in 0..8 {
            let c = draws.colour();
            let mut d: Vec<f32> = near
                .iter()
                .map(|p| (0..3).map(|k| (p[k] - c[k]).powi(2)).sum::<f32>())
                .collect();
            let q = d.len() / 10;
            let score = if d.is_empty() {
                0.0
            } else {
                *d.select_nth_unstable_by(q, f32::total_cmp).1
            };
            if score > best.1 {
                best = (c, score);
            }
        }
        best.0
    }
}

/// Writes samples `0..count` of the stream `seed` into `dir` as `shapes-<i>-<class>.png` (the
/// image) and `shapes-<i>-<class>-mask.png` (white = object). Returns the image paths.
pub fn save_examples(
    config: &ShapesConfig,
    seed: u64,
    count: usize,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| SaliencyError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let s = config.size as u32;
    let mut paths = Vec::new();
    for i in 0..count {
        let sample = config.generate(seed, i as u64);
        let stem = format!("shapes-{i:03}-{}", CLASSES[sample.label]);
        let v = sample.image.as_slice();
        let plane = (s * s) as usize;
        let byte = |x: f32| (x * 255.0).round() as u8;
        let rgb = RgbImage::from_fn(s, s, |x, y| {
            let p = (y * s + x) as usize;
            Rgb([byte(v[p]), byte(v[plane + p]), byte(v[2 * plane + p])])
        });
        let path = dir.join(format!("{stem}.png"));
        save_png(&path, &rgb)?;
        let mask = GrayImage::from_fn(s, s, |x, y| {
            Luma([if sample.mask[(y * s + x) as usize] {
                255
            } else {
                0
            }])
        });
        let mask_path = dir.join(format!("{stem}-mask.png"));
        let mut png = Vec::new();
        mask.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| SaliencyError::Image {
                path: mask_path.clone(),
                reason: format!("cannot encode PNG: {e}"),
            })?;
        crate::npy::write_atomically(&mask_path, |w| std::io::Write::write_all(w, &png))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_reproducible_and_distinct() {
        let config = ShapesConfig {
            size: 32,
            ..ShapesConfig::default()
        };
        let a = config.generate(3, 10);
        assert_eq!(a, config.generate(3, 10));
        assert_ne!(a.image, config.generate(3, 11).image);
        assert_ne!(a.image, config.generate(4, 10).image);
        let b = config.batch(3, 9..12);
        assert_eq!(b.images.dims(), &[3, 3, 32, 32]);
        assert_eq!(
            &b.images.as_slice()[3 * 32 * 32..6 * 32 * 32],
            a.image.as_slice()
        );
        assert_eq!(b.masks[1], a.mask);
    }

    #[test]
    fn objects_are_inside_and_sized_as_configured() {
        let config = ShapesConfig::default();
        let s = config.size;
        for i in 0..50 {
            let sample = config.generate(TEST_SEED, i);
            assert_eq!(sample.label, (i % 5) as usize);
            let area = sample.mask.iter().filter(|&&m| m).count() as f32;
            // Between the smallest shape (ring) at the smallest radius and a full disc at the
            // largest.
            let (r0, r1) = (config.radius.0 * s as f32, config.radius.1 * s as f32);
            assert!(
                area > 1.0 * r0 * r0 && area < 1.1 * PI * r1 * r1,
                "{i}: {area}"
            );
            // Nothing touches the border.
            for k in 0..s {
                for p in [k, (s - 1) * s + k, k * s, k * s + s - 1] {
                    assert!(!sample.mask[p], "{i}: mask touches the border");
                }
            }
            let v = sample.image.as_slice();
            assert!(v.iter().all(|&x| (0.0..=1.0).contains(&x)));
            assert!(
                v.iter()
                    .all(|&x| ((x * 255.0).round() / 255.0 - x).abs() < 1e-7)
            );
        }
    }

    #[test]
    fn the_object_stands_out_from_its_surroundings() {
        let config = ShapesConfig::default();
        let s = config.size;
        for i in 0..40 {
            let sample = config.generate(5, i);
            let v = sample.image.as_slice();
            let mean = |inside: bool| -> [f32; 3] {
                let idx: Vec<usize> = (0..s * s).filter(|&p| sample.mask[p] == inside).collect();
                std::array::from_fn(|k| {
                    idx.iter().map(|&p| v[k * s * s + p]).sum::<f32>() / idx.len() as f32
                })
            };
            let (a, b) = (mean(true), mean(false));
            let d: f32 = (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f32>().sqrt();
            assert!(d > 0.1, "{i}: object and background colours are {d} apart");
        }
    }

    #[test]
    fn classes_are_the_shapes() {
        // Centre of the disc, square, triangle and cross are inside; the ring's centre is not.
        for class in 0..4 {
            assert!(inside(class, 0.0, 0.0));
        }
        assert!(!inside(4, 0.0, 0.0) && inside(4, 0.8, 0.0));
        // Corners: in the square only.
        assert!(inside(1, 0.8, 0.8) && !inside(0, 0.8, 0.8) && !inside(3, 0.8, 0.8));
    }
}
