//! `agentcpt report RUN_DIR`: charts of a run's `metrics.jsonl`, each as PNG and SVG, drawn
//! with plotters: losses (train, per source, held-out), throughput, the optimiser (learning
//! rate, gradient norm) and a heat map of the load of every expert of every MoE layer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// Fonts tried, in order, when `--font` is not given (plotters draws text with a TrueType font
/// it is handed; it has none of its own).
const FONT_CANDIDATES: [&str; 8] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

const SIZE: (u32, u32) = (1000, 700);
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One line of a panel; `markers` draws points (sparse series such as held-out loss).
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    markers: bool,
}

struct Panel {
    y_label: &'static str,
    series: Vec<Series>,
}

enum Chart {
    /// Panels stacked vertically, sharing the step axis.
    Lines { title: String, panels: Vec<Panel> },
    /// `load[layer][expert]`: tokens routed to the expert ÷ the layer's mean per expert.
    ExpertLoad { title: String, load: Vec<Vec<f64>> },
}

/// Reads `metrics.jsonl`, naming the file and line of anything that is not a step record.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        if record["step"].as_u64().is_none() {
            bail!("{}:{}: record without a `step`", path.display(), i + 1);
        }
        records.push(record);
    }
    if records.is_empty() {
        bail!("{}: no step records", path.display());
    }
    Ok(records)
}

/// Draws every chart the run's metrics allow into `out_dir`; returns the files written.
pub fn write(run_dir: &Path, out_dir: &Path, font: Option<&Path>) -> Result<Vec<PathBuf>> {
    let records = read_metrics(&run_dir.join("metrics.jsonl"))?;
    register_font(font)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut charts = vec![
        ("loss", loss_chart(&name, &records)),
        ("throughput", throughput_chart(&name, &records)),
        ("optimizer", optimizer_chart(&name, &records)),
    ];
    if let Some(chart) = expert_load_chart(&name, &records) {
        charts.push(("expert_load", chart));
    }
    let mut written = Vec::new();
    for (stem, chart) in &charts {
        let png = out_dir.join(format!("{stem}.png"));
        let svg = out_dir.join(format!("{stem}.svg"));
        draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart)
            .with_context(|| format!("cannot draw {}", png.display()))?;
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)
            .with_context(|| format!("cannot draw {}", svg.display()))?;
        written.extend([png, svg]);
    }
    Ok(written)
}

fn register_font(font: Option<&Path>) -> Result<()> {
    static REGISTERED: OnceLock<PathBuf> = OnceLock::new();
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let path = match font {
        Some(p) => p.to_path_buf(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no TrueType font found (looked for {}); pass --font FILE.ttf",
                    FONT_CANDIDATES.join(", ")
                )
            })?,
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("cannot read font {}", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a TrueType/OpenType font", path.display()))?;
    let _ = REGISTERED.set(path);
    Ok(())
}

/// `(step, record[key])` for every record where the key is a number.
fn series(records: &[Value], name: &str, get: impl Fn(&Value) -> Option<f64>) -> Series {
    Series {
        name: name.to_string(),
        points: records
            .iter()
            .filter_map(|r| Some((r["step"].as_f64()?, get(r)?)))
            .filter(|(_, y)| y.is_finite())
            .collect(),
        markers: false,
    }
}

/// The keys of the objects under `key` across all records, sorted.
fn sub_keys(records: &[Value], key: &str) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .filter_map(|r| r[key].as_object())
        .flat_map(|o| o.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn loss_chart(name: &str, records: &[Value]) -> Chart {
    let mut train = vec![series(records, "train", |r| r["loss"].as_f64())];
    for source in sub_keys(records, "loss_per_source") {
        train.push(series(records, &format!("train: {source}"), |r| {
            r["loss_per_source"][&source].as_f64()
        }));
    }
    for source in sub_keys(records, "val_loss") {
        let mut s = series(records, &format!("held-out: {source}"), |r| {
            r["val_loss"][&source].as_f64()
        });
        s.markers = true;
        train.push(s);
    }
    let mut panels = vec![Panel {
        y_label: "loss (nats/token)",
        series: train,
    }];
    let aux: Vec<Series> = [("aux (load balancing)", "aux_loss"), ("router z", "z_loss")]
        .into_iter()
        .map(|(label, key)| series(records, label, |r| r[key].as_f64()))
        .filter(|s| !s.points.is_empty())
        .collect();
    if !aux.is_empty() {
        panels.push(Panel {
            y_label: "router losses",
            series: aux,
        });
    }
    Chart::Lines {
        title: format!("{name}: loss"),
        panels,
    }
}

fn throughput_chart(name: &str, records: &[Value]) -> Chart {
    let mut panels = vec![
        Panel {
            y_label: "tokens/s",
            series: vec![series(records, "tokens/s", |r| r["tokens_per_s"].as_f64())],
        },
        Panel {
            y_label: "TFLOP/s",
            series: vec![series(records, "TFLOP/s", |r| r["tflops"].as_f64())],
        },
    ];
    let mfu = series(records, "MFU (%)", |r| Some(100.0 * r["mfu"].as_f64()?));
    if !mfu.points.is_empty() {
        panels.push(Panel {
            y_label: "MFU (%)",
            series: vec![mfu],
        });
    }
    let convention = records
        .last()
        .and_then(|r| r["flops_convention"].as_str())
        .unwrap_or("");
    Chart::Lines {
        title: format!("{name}: throughput (FLOPs: {convention})"),
        panels,
    }
}

fn optimizer_chart(name: &str, records: &[Value]) -> Chart {
    Chart::Lines {
        title: format!("{name}: optimiser"),
        panels: vec![
            Panel {
                y_label: "learning rate",
                series: vec![series(records, "lr", |r| r["lr"].as_f64())],
            },
            Panel {
                y_label: "gradient norm",
                series: vec![series(records, "grad norm (before clipping)", |r| {
                    r["grad_norm"].as_f64()
                })],
            },
        ],
    }
}

/// Tokens per expert summed over the whole run, per MoE layer, relative to the layer's mean.
fn expert_load_chart(name: &str, records: &[Value]) -> Option<Chart> {
    let mut totals: Vec<Vec<f64>> = Vec::new();
    for record in records {
        let Some(layers) = record["tokens_per_expert"].as_array() else {
            continue;
        };
        for (l, layer) in layers.iter().enumerate() {
            let counts: Vec<f64> = layer
                .as_array()
                .map(|c| c.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            match totals.get_mut(l) {
                Some(acc) if acc.len() == counts.len() => {
                    acc.iter_mut().zip(&counts).for_each(|(a, c)| *a += c)
                }
                Some(_) => {}
                None => totals.push(counts),
            }
        }
    }
    totals.retain(|l| !l.is_empty());
    if totals.is_empty() {
        return None;
    }
    let load = totals
        .into_iter()
        .map(|layer| {
            let mean = layer.iter().sum::<f64>() / layer.len() as f64;
            layer
                .iter()
                .map(|c| c / mean.max(f64::MIN_POSITIVE))
                .collect()
        })
        .collect();
    Some(Chart::ExpertLoad {
        title: format!("{name}: expert load (tokens ÷ layer mean; blue under, red over)"),
        load,
    })
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(fail)?;
    match chart {
        Chart::Lines { title, panels } => {
            let body = root
                .titled(title, ("sans-serif", 22).into_font())
                .map_err(fail)?;
            for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(panels) {
                draw_panel(area, panel).map_err(fail)?;
            }
        }
        Chart::ExpertLoad { title, load } => draw_heat_map(&root, title, load).map_err(fail)?,
    }
    root.present().map_err(fail)
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad)..(hi + pad)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(range(points().map(|p| p.0)), range(points().map(|p| p.1)))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(panel.y_label)
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let width = if i == 0 { 2 } else { 1 };
        let style = color.stroke_width(width);
        if s.markers {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?
                .label(s.name.as_str())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    if panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Blue below the mean load, white at it, red above (saturating at twice the mean).
fn load_color(load: f64) -> RGBColor {
    let t = (load - 1.0).clamp(-1.0, 1.0);
    let fade = |c: u8, t: f64| (255.0 - (255.0 - c as f64) * t.abs()) as u8;
    if t < 0.0 {
        RGBColor(fade(33, t), fade(102, t), fade(172, t))
    } else {
        RGBColor(fade(178, t), fade(24, t), fade(43, t))
    }
}

fn draw_heat_map<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    load: &[Vec<f64>],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (layers, experts) = (load.len(), load.iter().map(Vec::len).max().unwrap_or(0));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        // A segmented range a..b has b − a + 1 segments.
        .build_cartesian_2d(
            (0..experts - 1).into_segmented(),
            (0..layers - 1).into_segmented(),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("expert")
        .y_desc("MoE layer")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(load.iter().enumerate().flat_map(|(l, row)| {
        row.iter().enumerate().map(move |(e, &v)| {
            let corner = |e, l| (SegmentValue::Exact(e), SegmentValue::Exact(l));
            Rectangle::new([corner(e, l), corner(e + 1, l + 1)], load_color(v).filled())
        })
    }))?;
    let (min, max) = load
        .iter()
        .flatten()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    root.draw(&Text::new(
        format!("load range {min:.2}–{max:.2} × mean"),
        (20, SIZE.1 as i32 - 20),
        ("sans-serif", 14).into_font(),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_colors_go_blue_white_red() {
        assert_eq!(load_color(1.0), RGBColor(255, 255, 255));
        assert_eq!(load_color(0.0), RGBColor(33, 102, 172));
        assert_eq!(load_color(5.0), RGBColor(178, 24, 43));
    }

    #[test]
    fn ranges_pad_and_survive_constant_series() {
        let r = range([2.0, 2.0].into_iter());
        assert!(r.start < 2.0 && r.end > 2.0);
        assert_eq!(range(std::iter::empty()), 0.0..1.0);
    }
}
