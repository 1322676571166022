//! Sweeps as PNG line plots, drawn by `plotters` into a pixel buffer. Text uses a bundled
//! ASCII subset of DejaVu Sans (Bitstream Vera licence, `fonts/LICENSE-DejaVu.txt`) through
//! `ab_glyph`, so no system font or fontconfig is needed.

use super::Sweep;
use crate::error::{Result, SaliencyError};
use crate::image_io::save_png;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans, subset to printable ASCII and ± × ° − σ ² (about 10 KiB).
static FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans-subset.ttf");

const WIDTH: u32 = 820;
const HEIGHT: u32 = 540;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(127, 127, 127),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// Registers the bundled font once; whether that worked is remembered for later calls.
fn register() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the bundled font (DejaVu Sans subset) could not be registered".into())
    }
}

/// Draws `sweep` (one line with markers per series, error bars of ± one standard error) and
/// writes it to `path` as PNG; `log_x` puts the parameter on a logarithmic axis.
pub fn plot_sweep(sweep: &Sweep, path: &Path, log_x: bool) -> Result<()> {
    let fail = |reason: String| SaliencyError::Image {
        path: path.to_path_buf(),
        reason,
    };
    register().map_err(fail)?;
    if sweep.xs.is_empty() {
        return Err(fail("a sweep without points cannot be plotted".into()));
    }
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let (lo, hi) = sweep
        .xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let span = (hi - lo).max(1e-9);
    if log_x {
        let lo = lo.max(1e-9);
        draw(&mut buffer, sweep, (lo / 1.3..hi * 1.3).log_scale())
    } else {
        draw(&mut buffer, sweep, lo - 0.04 * span..hi + 0.04 * span)
    }
    .map_err(fail)?;
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, buffer)
        .ok_or_else(|| fail("the pixel buffer has the wrong size".into()))?;
    save_png(path, &image)
}

fn draw<X>(buffer: &mut [u8], sweep: &Sweep, x_spec: X) -> std::result::Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(buffer, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let values = sweep.series.iter().flat_map(|s| {
        s.values
            .iter()
            .zip(&s.std_errors)
            .flat_map(|(v, e)| [v - e, v + e])
    });
    let (y_lo, y_hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = if y_lo > y_hi {
        (0.0, 1.0)
    } else {
        (
            ((y_lo * 20.0).floor() / 20.0).max(0.0),
            ((y_hi * 20.0).ceil() / 20.0).min(1.0).max(y_lo + 0.05),
        )
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} ({} images)", sweep.title, sweep.images),
            ("sans-serif", 22),
        )
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d(x_spec, y_lo..y_hi)
        .map_err(|e| err(&e))?;
    let tick = |v: &f64| format!("{}", (v * 1e4).round() / 1e4);
    chart
        .configure_mesh()
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .x_desc(sweep.parameter.as_str())
        .y_desc(sweep.metric.as_str())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (k, series) in sweep.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        // Undefined points (NaN) are left out.
        let points: Vec<(f64, f64)> = sweep
            .xs
            .iter()
            .copied()
            .zip(series.values.iter().copied())
            .filter(|(_, y)| y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, colour.filled())),
            )
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                sweep
                    .xs
                    .iter()
                    .zip(&series.values)
                    .zip(&series.std_errors)
                    .filter(|((_, y), e)| y.is_finite() && e.is_finite())
                    .map(|((&x, &y), &e)| {
                        ErrorBar::new_vertical(x, y - e, y, y + e, colour.stroke_width(1), 6)
                    }),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(legend_corner(sweep, (y_lo, y_hi)))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The corner of the plot with the fewest data points near it (by value, in the y range and
/// in the order of the x values), where the legend hides the least.
fn legend_corner(sweep: &Sweep, (y_lo, y_hi): (f64, f64)) -> SeriesLabelPosition {
    let n = sweep.xs.len().max(2) - 1;
    let mut counts = [0usize; 4]; // upper left, upper right, lower left, lower right
    for series in &sweep.series {
        for (i, y) in series.values.iter().enumerate() {
            let (u, v) = (i as f64 / n as f64, (y - y_lo) / (y_hi - y_lo).max(1e-12));
            if !v.is_finite() {
                continue;
            }
            let (left, right, upper, lower) = (u < 0.45, u > 0.55, v > 0.6, v < 0.4);
            counts[0] += usize::from(left && upper);
            counts[1] += usize::from(right && upper);
            counts[2] += usize::from(left && lower);
            counts[3] += usize::from(right && lower);
        }
    }
    match (0..4).rev().min_by_key(|&k| counts[k]) {
        Some(0) => SeriesLabelPosition::UpperLeft,
        Some(1) => SeriesLabelPosition::UpperRight,
        Some(2) => SeriesLabelPosition::LowerLeft,
        _ => SeriesLabelPosition::LowerRight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::Series;

    #[test]
    fn plots_render_text_without_system_fonts() {
        let sweep = Sweep {
            title: "Test".into(),
            parameter: "noise level σ / (max − min)".into(),
            metric: "mass accuracy".into(),
            xs: vec![1.0, 10.0, 100.0],
            series: vec![Series {
                name: "smoothgrad".into(),
                values: vec![0.3, 0.5, 0.6],
                std_errors: vec![0.02, 0.02, 0.01],
            }],
            images: 3,
            seconds: 0.0,
        };
        let dir = tempfile::tempdir().unwrap();
        for log_x in [false, true] {
            let path = dir.path().join(format!("plot-{log_x}.png"));
            plot_sweep(&sweep, &path, log_x).unwrap();
            let png = image::open(&path).unwrap().to_rgb8();
            assert_eq!((png.width(), png.height()), (WIDTH, HEIGHT));
            // The caption band holds dark (text) pixels: glyphs were rasterised.
            let dark = (0..WIDTH)
                .flat_map(|x| (0..40).map(move |y| (x, y)))
                .filter(|&(x, y)| png.get_pixel(x, y).0.iter().all(|&c| c < 100))
                .count();
            assert!(
                dark > 50,
                "log_x {log_x}: {dark} dark pixels in the caption"
            );
        }
    }
}
