//! `smoothgrad demo`: every method on the bundled digits model and images, as figures like the
//! SmoothGrad paper's (rows = images, columns = the input, then one map per method).
//!
//! The model and images are compiled into the binary, so the demo runs from any directory.

use crate::common::{self, Drawing};
use anyhow::{Context, Result};
use clap::Args;
use image::RgbImage;
use smoothgrad_autodiff::Tensor;
use smoothgrad_saliency::image_io::{self, ImageOptions};
use smoothgrad_saliency::visualize::{self, Colormap};
use smoothgrad_saliency::{Aggregate, Explainer, IgConfig, Method, NoiseLevel, Smoothing};
use std::path::{Path, PathBuf};
use std::time::Instant;

const WEIGHTS: &[u8] = include_bytes!("../../../assets/digits-cnn.safetensors");
const ARCH: &str = include_str!("../../../assets/digits-cnn.arch.json");
const IMAGES: &[(&str, &[u8])] = &[
    (
        "digit-0",
        include_bytes!("../../../assets/images/digit-0.png"),
    ),
    (
        "digit-2",
        include_bytes!("../../../assets/images/digit-2.png"),
    ),
    (
        "digit-3",
        include_bytes!("../../../assets/images/digit-3.png"),
    ),
    (
        "digit-5",
        include_bytes!("../../../assets/images/digit-5.png"),
    ),
    (
        "digit-7",
        include_bytes!("../../../assets/images/digit-7.png"),
    ),
    (
        "digit-8",
        include_bytes!("../../../assets/images/digit-8.png"),
    ),
];

/// The shapes benchmark's CNN, trained by our own engine (`smoothgrad train`), and test images
/// with their ground-truth object masks.
const SHAPES_WEIGHTS: &[u8] = include_bytes!("../../../assets/shapes-cnn.safetensors");
const SHAPES_ARCH: &str = include_str!("../../../assets/shapes-cnn.arch.json");
const SHAPES: &[(&str, &[u8], &[u8])] = &[
    (
        "shapes-000-disc",
        include_bytes!("../../../assets/shapes/shapes-000-disc.png"),
        include_bytes!("../../../assets/shapes/shapes-000-disc-mask.png"),
    ),
    (
        "shapes-001-square",
        include_bytes!("../../../assets/shapes/shapes-001-square.png"),
        include_bytes!("../../../assets/shapes/shapes-001-square-mask.png"),
    ),
    (
        "shapes-002-triangle",
        include_bytes!("../../../assets/shapes/shapes-002-triangle.png"),
        include_bytes!("../../../assets/shapes/shapes-002-triangle-mask.png"),
    ),
    (
        "shapes-003-cross",
        include_bytes!("../../../assets/shapes/shapes-003-cross.png"),
        include_bytes!("../../../assets/shapes/shapes-003-cross-mask.png"),
    ),
    (
        "shapes-004-ring",
        include_bytes!("../../../assets/shapes/shapes-004-ring.png"),
        include_bytes!("../../../assets/shapes/shapes-004-ring-mask.png"),
    ),
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this model instead of the bundled one (an .onnx file, or .safetensors with --arch);
    /// it must take the bundled 1×32×32 digits.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The JSON architecture of a .safetensors --model.
    #[arg(long, value_name = "FILE", requires = "model")]
    arch: Option<PathBuf>,
    /// Directory the figures are written to (created if missing).
    #[arg(long, value_name = "DIR", default_value = "demo-output")]
    out_dir: PathBuf,
    /// Noisy copies per smoothed map.
    #[arg(long, value_name = "N", default_value_t = 50)]
    samples: usize,
    /// Noise σ as a fraction of the input's range.
    #[arg(long, value_name = "LEVEL", default_value_t = 0.15)]
    noise_level: f64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Colour map of the maps [default: gray; inferno with --overlay; red-blue with --diverging].
    #[arg(long, value_name = "NAME", value_parser = common::parse_colormap)]
    colormap: Option<Colormap>,
    /// Draw the maps over the digits.
    #[arg(long)]
    overlay: bool,
    /// Draw signed maps (blue negative, red positive) instead of their magnitude.
    #[arg(long, conflicts_with = "overlay")]
    diverging: bool,
    /// Enlargement of every 32×32 picture in the figures (nearest neighbour).
    #[arg(long, value_name = "K", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    scale: u32,
}

/// One column of the figure.
struct Column {
    title: &'static str,
    method: Method,
    smoothing: Option<Smoothing>,
}

fn columns(args: &DemoArgs) -> Vec<Column> {
    let smooth = |aggregate| {
        Some(Smoothing {
            samples: args.samples,
            noise: NoiseLevel::Relative(args.noise_level),
            seed: args.seed,
            given_noise: None,
            aggregate,
        })
    };
    let ig = Method::IntegratedGradients(IgConfig::default());
    // Smoothed IG evaluates n × steps points; 20 steps keep it quick and still accurate here.
    let ig_short = Method::IntegratedGradients(IgConfig {
        steps: 20,
        ..IgConfig::default()
    });
    vec![
        Column {
            title: "gradient",
            method: Method::Gradient,
            smoothing: None,
        },
        Column {
            title: "smoothgrad",
            method: Method::Gradient,
            smoothing: smooth(Aggregate::Mean),
        },
        Column {
            title: "smoothgrad squared",
            method: Method::Gradient,
            smoothing: smooth(Aggregate::MeanOfSquares),
        },
        Column {
            title: "vargrad",
            method: Method::Gradient,
            smoothing: smooth(Aggregate::Variance),
        },
        Column {
            title: "grad × input",
            method: Method::GradXInput,
            smoothing: None,
        },
        Column {
            title: "integrated gradients",
            method: ig,
            smoothing: None,
        },
        Column {
            title: "guided backprop",
            method: Method::GuidedBackprop,
            smoothing: None,
        },
        Column {
            title: "smoothgrad on IG",
            method: ig_short,
            smoothing: smooth(Aggregate::Mean),
        },
    ]
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let model = match &args.model {
        Some(path) => common::load_model(path, args.arch.as_deref())?,
        None => smoothgrad_layers::build_safetensors_model(
            WEIGHTS,
            "assets/digits-cnn.safetensors",
            ARCH,
            "assets/digits-cnn.arch.json",
        )
        .context("the bundled demo model")?,
    };
    let explainer = Explainer::new(&model);
    let drawing = Drawing::new(args.diverging, args.overlay, args.colormap);
    let columns = columns(args);
    let titles: Vec<&str> = std::iter::once("input")
        .chain(columns.iter().map(|c| c.title))
        .collect();
    println!("columns: {}", titles.join(" | "));
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;

    let options = ImageOptions {
        channels: model.input_dims()[0],
        resize: None,
    };
    let mut rows = Vec::with_capacity(IMAGES.len());
    for (name, bytes) in IMAGES {
        let image_start = Instant::now();
        let x = image_io::decode_image(bytes, Path::new(name), &options)?;
        let row = explain_row(&explainer, &columns, drawing, &x, name)?;
        let path = args.out_dir.join(format!("{name}-methods.png"));
        image_io::save_png(
            &path,
            &visualize::grid(&titles, std::slice::from_ref(&row.tiles), args.scale)?,
        )?;
        println!(
            "{name}: predicted {} (p = {:.4}), {:.2} s -> {}",
            row.class,
            row.probability,
            image_start.elapsed().as_secs_f64(),
            path.display()
        );
        rows.push(row.tiles);
    }
    let path = args.out_dir.join("demo-grid.png");
    image_io::save_png(&path, &visualize::grid(&titles, &rows, args.scale)?)?;
    println!(
        "wrote {} ({} images × {} methods) in {:.2} s",
        path.display(),
        rows.len(),
        columns.len(),
        start.elapsed().as_secs_f64()
    );
    if args.model.is_none() {
        shapes_figure(args, &columns, drawing)?;
    }
    Ok(())
}

/// The same methods on the shapes benchmark, whose object masks are known: a figure with the
/// mask beside each input, and each map's relevance mass accuracy printed.
fn shapes_figure(args: &DemoArgs, columns: &[Column], drawing: Drawing) -> Result<()> {
    let model = smoothgrad_layers::build_safetensors_model(
        SHAPES_WEIGHTS,
        "assets/shapes-cnn.safetensors",
        SHAPES_ARCH,
        "assets/shapes-cnn.arch.json",
    )
    .context("the bundled shapes model")?;
    let explainer = Explainer::new(&model);
    let titles: Vec<&str> = ["input", "object mask"]
        .into_iter()
        .chain(columns.iter().map(|c| c.title))
        .collect();
    let (rgb, gray) = (
        ImageOptions {
            channels: 3,
            resize: None,
        },
        ImageOptions {
            channels: 1,
            resize: None,
        },
    );
    let mut rows = Vec::with_capacity(SHAPES.len());
    let mut mass = vec![0.0; columns.len()];
    for (name, bytes, mask_bytes) in SHAPES {
        let x = image_io::decode_image(bytes, Path::new(name), &rgb)?;
        let mask_image = image_io::decode_image(mask_bytes, Path::new(name), &gray)?;
        let mask: Vec<bool> = mask_image.as_slice().iter().map(|&v| v > 0.5).collect();
        let mut tiles = vec![
            visualize::input_to_rgb(&x)?,
            visualize::input_to_rgb(&mask_image)?,
        ];
        for (k, column) in columns.iter().enumerate() {
            let map = explainer
                .explain(&x, None, &column.method, column.smoothing.as_ref())
                .with_context(|| format!("{name}: {}", column.title))?;
            mass[k] += smoothgrad_saliency::metrics::mass_accuracy(&map.attribution, &mask)?
                / SHAPES.len() as f64;
            tiles.push(drawing.draw(&map.attribution, &x)?);
        }
        rows.push(tiles);
    }
    let path = args.out_dir.join("shapes-grid.png");
    image_io::save_png(&path, &visualize::grid(&titles, &rows, args.scale)?)?;
    println!(
        "wrote {} (the shapes benchmark, masks known); relevance mass accuracy on these {} images:",
        path.display(),
        SHAPES.len()
    );
    for (column, m) in columns.iter().zip(&mass) {
        println!("  {:<22} {m:.3}", column.title);
    }
    Ok(())
}

/// The pictures of one image's row and its prediction.
struct Row {
    tiles: Vec<RgbImage>,
    class: usize,
    probability: f64,
}

fn explain_row(
    explainer: &Explainer<f32>,
    columns: &[Column],
    drawing: Drawing,
    x: &Tensor<f32>,
    name: &str,
) -> Result<Row> {
    let mut tiles = vec![visualize::input_to_rgb(x)?];
    let mut prediction = (0, 0.0);
    for column in columns {
        let map = explainer
            .explain(x, None, &column.method, column.smoothing.as_ref())
            .with_context(|| format!("{name}: {}", column.title))?;
        let (class, _, p) = common::top_k(&map.logits, 1)[0];
        prediction = (class, p);
        tiles.push(drawing.draw(&map.attribution, x)?);
    }
    Ok(Row {
        tiles,
        class: prediction.0,
        probability: prediction.1,
    })
}
